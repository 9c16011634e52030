"""Loading model sources safely and exporting them to ONNX (running ONNX models: `squeezeflow.runtime`).

Every candidate ships as ONNX and is evaluated and benchmarked in ONNX Runtime, so the baseline is
exported once here. PyTorch weights are read with ``weights_only=True``; nothing is unpickled freely.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from squeezeflow.errors import ModelLoadError
from squeezeflow.library_output import quiet_onnx_export
from squeezeflow.models.exported_program import load_exported_program, weights_only_reason
from squeezeflow.spec.job import ModelSource
from squeezeflow.user_code import checked_module, import_user_callable

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def import_callable(ref: str, what: str = "model factory") -> Any:
    """Resolve ``package.module:callable`` (see `squeezeflow.user_code` for what is refused)."""
    return import_user_callable(ref, what, ModelLoadError)


def load_torch_model(source: ModelSource, path: Path) -> Any:
    """The model as a torch ``nn.Module``, ``ScriptModule`` or ``ExportedProgram`` (eval mode). ``path`` is
    the fetched source: a file, or for ``huggingface`` the checkpoint's folder or its packed archive."""
    import torch

    if source.format == "huggingface":
        from squeezeflow.models.huggingface import load_huggingface_model

        return load_huggingface_model(source.uri, path)
    _check_archive_members(source.uri, path)
    try:
        if source.format == "state_dict":
            assert source.factory is not None
            state = _load_weights(source.uri, path)
            model = checked_module(
                import_callable(source.factory)(**source.factory_kwargs), source.factory, ModelLoadError
            )
            _check_fits(state, model.state_dict(), f"{source.uri} does not fit {source.factory}")
            model.load_state_dict(state)
            return model.eval()
        if source.format == "torchscript":
            return torch.jit.load(str(path), map_location="cpu").eval()
        if source.format == "exported_program":
            return load_exported_program(source.uri, path)
    except ModelLoadError:
        raise
    except Exception as err:  # torch raises many types for corrupt archives; all mean "bad input"
        raise ModelLoadError(
            f"cannot load {source.format} model from {source.uri}: {type(err).__name__}: {str(err)[:300]}"
        ) from None
    raise ModelLoadError(f"{source.format} is not a PyTorch format")


def _check_archive_members(uri: str, path: Path) -> None:
    """Refuse a PyTorch zip archive (torch.save, TorchScript, torch.export) with a member whose name is
    absolute or climbs out of the archive: no loader of ours should ever be handed such a name."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise ModelLoadError(f"cannot read the archive {uri}: {err}") from None
    for name in names:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts:
            raise ModelLoadError(
                f"model {uri} is refused: its archive member {name!r} points outside the archive "
                "(a path-traversal archive; re-save the model with torch.save / torch.export.save)"
            )


def check_batch_dimension(model: Any, what: str, how_to_fix: str) -> None:
    """Refuse an ONNX model whose first input has a fixed batch size: squeezeflow evaluates in batches and
    benchmarks each profile's batch sizes, so the batch dimension must be dynamic."""
    first = model.graph.input[0]
    dims = first.type.tensor_type.shape.dim
    if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
        raise ModelLoadError(
            f"{what} accepts only batch {dims[0].dim_value} (its input {first.name!r} has a fixed first "
            f"dimension); squeezeflow evaluates in batches and benchmarks several batch sizes: {how_to_fix}"
        )


def check_input_shape(model: Any, input_shape: list[int], what: str) -> None:
    """Refuse an ONNX model whose first input's fixed per-sample dimensions differ from the dataset's
    sample shape (symbolic dimensions are accepted)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    declared = [d.dim_value if d.HasField("dim_value") else None for d in dims][1:]
    if len(declared) != len(input_shape) or any(
        d is not None and d != s for d, s in zip(declared, input_shape, strict=False)
    ):
        shown = [d if d is not None else "?" for d in declared]
        raise ModelLoadError(
            f"{what} expects samples of shape {shown}, but the dataset's samples are {list(input_shape)}"
        )


def _load_weights(uri: str, path: Path) -> dict[str, Any]:
    """A state_dict read with ``weights_only=True``: plain tensors and containers, never arbitrary
    pickled objects (which could run code)."""
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelLoadError(
            f"{uri} cannot be loaded safely: torch.load with weights_only=True refused it "
            f"({weights_only_reason(str(err))[:300]}). The file is corrupt or holds pickled Python objects "
            "rather than plain tensors; squeezeflow never unpickles those. "
            "Save the weights with torch.save(model.state_dict(), path)."
        ) from None
    except Exception as err:  # torch raises many types for damaged archives
        raise ModelLoadError(
            f"{uri} is not a readable PyTorch file (corrupt or truncated?): "
            f"{type(err).__name__}: {str(err)[:300]}"
        ) from None
    if not isinstance(state, dict):
        raise ModelLoadError(f"{uri}: expected a state_dict (a mapping), got {type(state).__name__}")
    return state


def _check_fits(state: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    """Raise when ``state`` does not have exactly the model's keys and tensor shapes."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {list(getattr(state[k], 'shape', ()))} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        raise ModelLoadError(
            f"{what}: {len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:5]}, {len(mismatched)} shape mismatches (file vs model) {mismatched[:5]}"
        )


def example_input(input_shape: list[int], dtype: Any = np.float32, batch: int = 2) -> Any:
    """A torch example batch of the dataset's dtype for tracing/export.

    float32: zeros. int64 (token ids): id 1 in the first half of each row and the pad id 0 after it, so
    the example is a valid, partly padded sequence for any vocabulary of two or more tokens (all zeros
    would be all padding, a degenerate input for a text model)."""
    import torch

    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.integer):
        ids = torch.zeros(batch, *input_shape, dtype=torch.int64)
        width = input_shape[-1] if input_shape else 1
        ids[..., : max(1, (width + 1) // 2)] = 1
        return ids.to(torch.int32) if dt == np.int32 else ids
    if dt != np.float32:
        raise ModelLoadError(f"cannot export a model for {dt} inputs (float32 or int64 only)")
    return torch.zeros(batch, *input_shape)


def export_onnx(
    model: Any, input_shape: list[int], out_path: Path, opset: int = 18, dtype: Any = np.float32
) -> Path:
    """Export a torch model to a single self-contained ONNX file with a dynamic batch dimension.

    ``dtype`` is the dtype of the dataset's ``x`` (float32, or int64 token ids), so the exported model's
    input has that type."""
    import torch

    example = (example_input(input_shape, dtype),)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any]
    if isinstance(model, torch.jit.ScriptModule):
        # TorchScript cannot go through torch.export; the TorchScript-based exporter handles it.
        kwargs = {"dynamo": False, "dynamic_axes": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}}
    elif isinstance(model, torch.export.ExportedProgram):
        kwargs = {"external_data": False, "verbose": False}  # its dynamic batch is already in the program
    else:
        model = model.eval()
        dynamic = {_first_forward_arg(model): {0: torch.export.Dim("batch")}}
        kwargs = {"external_data": False, "verbose": False, "dynamic_shapes": dynamic}
    # torch's exporter prints whole FX graphs to stderr for data-dependent shapes (the padding trim's
    # slice): kept out of the user's console, in the debug log instead.
    printed = io.StringIO()
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stderr(printed),
            contextlib.redirect_stdout(printed),
            quiet_onnx_export(),
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                example,
                str(out_path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                **kwargs,
            )
    except Exception as err:
        raise ModelLoadError(f"export to ONNX failed: {type(err).__name__}: {str(err)[:400]}") from None
    finally:
        if printed.getvalue().strip():
            log.debug("torch.onnx.export printed:\n%s", printed.getvalue())
    strip_debug_metadata(out_path)
    return out_path


def strip_debug_metadata(path: Path) -> int:
    """Remove what only a debugger reads from an ONNX file, in place; returns the bytes saved.

    torch's exporter records, for every node, the Python stack trace and module scope it came from
    (``metadata_props``), and intermediate shapes (``value_info``). A deployed model needs neither:
    on a pruned ResNet-18 they were 13% of the int8 file. The graph, its weights and the model-level
    metadata are untouched, so the model computes exactly the same outputs.
    """
    import onnx

    model = onnx.load(str(path))
    before = model.ByteSize()
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]
    saved = before - model.ByteSize()
    if saved > 0:
        onnx.save(model, str(path))
    return saved


def _first_forward_arg(model: Any) -> str:
    import inspect

    params = [p for p in inspect.signature(model.forward).parameters.values() if p.name != "self"]
    if not params:
        raise ModelLoadError("the model's forward() takes no input")
    return params[0].name


# protobuf's limit on one serialized message: an ONNX file with its weights inside cannot be larger.
_PROTOBUF_LIMIT = 2**31 - 1


def inline_external_data(path: Path, uri: str, fetch: Any) -> Path:
    """An ONNX file whose weights live in files beside it (``location`` in its initializers, as
    ``onnx.save(..., save_as_external_data=True)`` writes) made self-contained, in place: each referenced
    file is fetched from the model's own folder (``fetch(uri_of_the_file, local_dest)``, local or s3://),
    read into the graph, and the whole saved as one file, which the store then hashes and moves as one
    artifact. A location outside the model's folder, or weights beyond protobuf's 2 GB limit, are refused.
    A model without external data is returned untouched."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise ModelLoadError(
            f"model {uri} is not a valid ONNX model: {type(err).__name__}: {str(err)[:300]}"
        ) from None
    tensors = [t for t in model.graph.initializer if uses_external_data(t)]
    if not tensors:
        return path
    locations = sorted({next(e.value for e in t.external_data if e.key == "location") for t in tensors})
    base = uri.rsplit("/", 1)[0] if uri.startswith("s3://") else str(Path(uri).parent)
    folder = path.parent / f"{path.stem}-external"
    for location in locations:
        parts = PurePosixPath(location.replace("\\", "/")).parts
        if location.startswith(("/", "\\")) or ".." in parts or not parts:
            raise ModelLoadError(
                f"model {uri} refers to weights at {location!r}, outside its own folder: external data must "
                "lie in the model's folder or below it"
            )
        fetch(f"{base}/{'/'.join(parts)}", folder.joinpath(*parts))
    total = sum((folder / loc).stat().st_size for loc in locations)
    if total + model.ByteSize() > _PROTOBUF_LIMIT:
        raise ModelLoadError(
            f"model {uri} has {total:,} bytes of external weights; squeezeflow handles ONNX models up to "
            "2 GB (one self-contained file), not larger ones yet"
        )
    try:
        load_external_data_for_model(model, str(folder))
    except Exception as err:
        raise ModelLoadError(
            f"model {uri}: cannot read its external weights ({', '.join(locations)}): {str(err)[:300]}"
        ) from None
    onnx.save(model, str(path))
    log.info("model %s: %d external weight file(s) inlined (%d bytes)", uri, len(locations), total)
    return path


def check_onnx(path: Path, what: str) -> Any:
    """Load and check an ONNX file; a corrupt or truncated file is a ModelLoadError."""
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as err:
        raise ModelLoadError(
            f"{what} is not a valid ONNX model: {type(err).__name__}: {str(err)[:300]}"
        ) from None
    if not model.graph.input:
        raise ModelLoadError(f"{what} has no inputs")
    return model
