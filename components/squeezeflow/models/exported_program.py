"""Reading an ExportedProgram archive (``torch.export.save``, ``.pt2``) without running anything in it.

``torch.export.load`` is not safe on a file from someone else, and its documentation says so. Several
parts of an archive reach code execution on load:

* the example inputs (``data/sample_inputs/<model>.pt``) and the legacy weight and constant files go
  through ``torch.load(weights_only=True)``, and when that refuses them torch retries with
  ``weights_only=False``, which unpickles whatever the member holds (``__reduce__ -> os.system``);
* weights and constants marked ``use_pickle``, and opaque or custom-class constants, are unpickled
  freely;
* ``data/aotinductor/`` holds compiled code that the loader would load as a shared library;
* symbolic shape expressions (``expr_str``) are parsed with ``sympy.sympify``, which evaluates its
  string as Python;
* node targets are looked up as attributes of ``torch``, ``math`` or ``operator`` (``torch.os.system``
  resolves), and ``guards_code`` is Python source compiled into the guard of ``ExportedProgram.module()``.

So squeezeflow reads the archive itself first: only the members an ExportedProgram is made of, every
pickled member must load with ``weights_only=True``, no weight or constant is pickled, every node target
is an ATen/prims operator or an allowed arithmetic function, and every shape expression is made of shape
symbols, numbers, arithmetic and torch's own shape functions. The guard code and node metadata that
resolve names are dropped (squeezeflow feeds the dataset's shape and exports the graph to ONNX; neither
needs them). torch then loads the checked copy in memory, with unpickling refused while it does
(``_refuse_unpickling``), so a loader change in a later torch cannot reopen the hole unnoticed.
A file that fails any check is refused with a ``ModelLoadError`` naming the member and the reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from squeezeflow.errors import ModelLoadError

MODEL = "model"

# Members of a torch.export archive, relative to its root folder (torch/csrc/export/pt2_archive_constants.h).
_FIXED_MEMBERS = frozenset(
    {
        "archive_format",
        "archive_version",
        "byteorder",
        ".data/version",
        ".data/serialization_id",
        f"models/{MODEL}.json",
        f"data/weights/{MODEL}_weights_config.json",
        f"data/constants/{MODEL}_constants_config.json",
        f"data/sample_inputs/{MODEL}.pt",
        # the legacy layout (torch 2.6-2.7): whole state_dict / constants as one torch.save file
        f"data/weights/{MODEL}.pt",
        f"data/constants/{MODEL}.pt",
    }
)
_PATTERN_MEMBERS = (
    re.compile(r"data/weights/weight_\d+"),
    re.compile(r"data/constants/tensor_\d+"),
    re.compile(r"extra/[^/]+"),  # extra files: read as UTF-8 text only
)
# Members torch reads with torch.load: each must load with weights_only=True.
_TORCH_LOADED = (f"data/sample_inputs/{MODEL}.pt", f"data/weights/{MODEL}.pt", f"data/constants/{MODEL}.pt")
_WHAT = {
    "data/aotinductor": "compiled AOTInductor code, which the loader would load as a shared library",
    "data/executorch": "an ExecuTorch program",
    "data/mtia": "MTIA code",
    "xl_model_weights": "externally stored weights",
    "models": "a second program (squeezeflow loads the archive's one program, 'model')",
}

# A stored archive is not compressed (torch.export.save writes ZIP_STORED); a declared size far above
# the file's own size is a zip bomb.
_MAX_EXPANSION = 4
_MAX_EXTRA_BYTES = 64 << 20

# Node targets other than torch.ops.<namespace>.*: the arithmetic torch writes for symbolic shapes.
_OPERATOR_FUNCTIONS = frozenset(
    {"getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pos", "pow", "abs"}
    | {"eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_", "xor"}
)
_MATH_FUNCTIONS = frozenset({"ceil", "floor", "trunc", "sqrt"})
_TORCH_FUNCTIONS = frozenset(
    {"sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_ite", "sym_sqrt", "_sym_sqrt"}
    | {"sym_sum", "_check", "_check_is_size"}
)
_OP_NAMESPACES = frozenset({"aten", "prims", "quantized_decomposed"})
_HIGHER_ORDER_OPS = frozenset({"cond", "while_loop", "map_impl", "wrap_with_set_grad_enabled"})

# Shape expressions: symbols (s0, u3, ...), numbers, arithmetic, comparisons and the functions torch's
# deserializer itself provides to sympify, nothing else (no other names, no attributes or subscripts, no
# string but a quoted symbol name).
_SYMBOL = re.compile(r"[a-z]{1,4}\d+")
_SHAPE_FUNCTIONS = frozenset(
    {"FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt"}
    | {"CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv"}
    | {"IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal"}
    | {"ToFloat", "Identity", "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not"}
    | {"True", "False", "oo", "Integer", "Rational", "Float", "floor", "ceiling", "sqrt"}
    # how torch writes a symbol with its assumptions: Symbol('s31', positive=True, integer=True)
    | {"Symbol", "positive", "negative", "nonnegative", "integer", "real", "finite"}
)
_TOKEN = re.compile(
    r"\s+|(?P<number>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|'(?P<quoted>[a-z]{1,4}\d+)'|(?P<op>\*\*|//|[<>=!]=|[-+*/%(),<>=])"
)
_MAX_EXPR_CHARS = 4096
# Node metadata torch resolves to Python objects (source_fn_stack looks targets up in torch) or parses as
# JSON of its own; squeezeflow keeps only what is plain text.
_KEPT_METADATA = frozenset({"stack_trace", "nn_module_stack", "torch_fn"})


class UnsafeArchiveError(Exception):
    """Raised inside torch's loader when it tries to unpickle. Deliberately not a RuntimeError: torch
    catches RuntimeError and retries with its older, unchecked loader."""


def load_exported_program(uri: str, path: Path) -> Any:
    """The ``torch.export.ExportedProgram`` in the archive at ``path`` (``uri`` names it in messages),
    after the checks in this module's docstring; ``ModelLoadError`` if any fails."""
    import torch

    data = path.read_bytes()
    members = _members(uri, data)
    _check_torch_loaded(uri, members)
    _check_payload_configs(uri, members)
    program = json.loads(members[f"models/{MODEL}.json"])
    _check_program(uri, program)
    members[f"models/{MODEL}.json"] = json.dumps(program).encode()
    checked = _rebuild(members, root=_root(data))
    try:
        with _refuse_unpickling():
            return torch.export.load(io.BytesIO(checked))
    except UnsafeArchiveError as err:
        raise _refused(uri, f"torch's loader tried to unpickle a member ({err})") from None


def weights_only_reason(message: str) -> str:
    """The specific part of torch's weights_only refusal, without its generic advice (which suggests
    ``weights_only=False``, the one thing squeezeflow never does)."""
    generic = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for line in lines:
        if line.startswith("WeightsUnpickler error:"):
            # its first sentence names the refused global; the rest suggests allow-listing it
            return line.removeprefix("WeightsUnpickler error:").strip().split(". ")[0].rstrip(".")
    specific = [ln for ln in lines if not ln.startswith(generic)]
    return " ".join(specific) or (lines[0] if lines else "no details")


def _refused(uri: str, why: str) -> ModelLoadError:
    return ModelLoadError(
        f"model {uri} is refused: {why}. squeezeflow loads an ExportedProgram only when nothing in it "
        "can run code on load; re-export it with torch.export.export and torch.export.save (tensor "
        "example inputs, no custom objects), or give the model as ONNX or a state_dict with a factory"
    )


def _root(data: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        first = zf.namelist()[0]
    return first.split("/", 1)[0] if "/" in first else ""


def _members(uri: str, data: bytes) -> dict[str, bytes]:
    """Every member, by its name below the archive's root folder; refuses unknown members, archives
    without a program, and declared sizes beyond what the file can hold."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as err:
        raise ModelLoadError(f"model {uri} is not a torch.export archive (.pt2): {err}") from None
    with zf:
        infos = zf.infolist()
        if not infos:
            raise ModelLoadError(f"model {uri} is an empty archive")
        declared = sum(i.file_size for i in infos)
        if declared > _MAX_EXPANSION * len(data) + (1 << 20):
            raise _refused(
                uri, f"its members declare {declared:,} bytes, far more than the {len(data):,}-byte file"
            )
        root = infos[0].filename.split("/", 1)[0]
        members: dict[str, bytes] = {}
        for info in infos:
            name = info.filename
            if info.is_dir():
                continue
            if not name.startswith(f"{root}/") or ".." in PurePosixPath(name).parts:
                raise _refused(uri, f"its member {name!r} is outside the archive's folder {root!r}")
            rel = name[len(root) + 1 :]
            if rel not in _FIXED_MEMBERS and not any(p.fullmatch(rel) for p in _PATTERN_MEMBERS):
                what = next((w for prefix, w in _WHAT.items() if rel.startswith(prefix)), None)
                raise _refused(uri, f"its member {rel!r} is {what or 'not part of an ExportedProgram'}")
            if rel.startswith("extra/") and info.file_size > _MAX_EXTRA_BYTES:
                raise _refused(uri, f"its extra file {rel!r} is {info.file_size:,} bytes")
            try:
                members[rel] = zf.read(info)
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as err:
                raise ModelLoadError(f"model {uri}: cannot read member {rel!r}: {err}") from None
    for required in ("archive_version", f"models/{MODEL}.json"):
        if required not in members:
            raise ModelLoadError(
                f"model {uri} is not a torch.export archive (.pt2) of this format: it has no {required!r} "
                "(save it with torch.export.save of torch 2.6 or newer)"
            )
    return members


def _check_torch_loaded(uri: str, members: dict[str, bytes]) -> None:
    """The members torch reads with ``torch.load`` must load with ``weights_only=True``; otherwise torch
    would retry them with ``weights_only=False``."""
    import pickle

    import torch

    for rel in _TORCH_LOADED:
        if rel not in members or not members[rel]:
            continue
        try:
            with _refuse_unpickling():
                torch.load(io.BytesIO(members[rel]), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, UnsafeArchiveError) as err:
            raise _refused(
                uri,
                f"its member {rel!r} holds pickled Python objects that torch.load(weights_only=True) "
                f"refuses ({weights_only_reason(str(err))[:300]}); torch would load it again with "
                "weights_only=False, which can run code",
            ) from None
        except Exception as err:  # a damaged member: torch raises many types
            raise ModelLoadError(
                f"model {uri}: member {rel!r} is not a readable PyTorch file: {type(err).__name__}: "
                f"{str(err)[:300]}"
            ) from None


def _check_payload_configs(uri: str, members: dict[str, bytes]) -> None:
    """Weights and constants must be raw tensor bytes, never pickles or custom objects."""
    for kind in ("weights", "constants"):
        rel = f"data/{kind}/{MODEL}_{kind}_config.json"
        if rel not in members:
            continue
        try:
            config = json.loads(members[rel]).get("config", {})
        except (ValueError, AttributeError) as err:
            raise ModelLoadError(f"model {uri}: {rel!r} is not valid JSON: {err}") from None
        if not isinstance(config, dict):
            raise ModelLoadError(f"model {uri}: {rel!r} has no 'config' mapping")
        for fqn, meta in config.items():
            path_name = str(meta.get("path_name", "")) if isinstance(meta, dict) else ""
            if not isinstance(meta, dict) or meta.get("use_pickle"):
                raise _refused(uri, f"its {kind[:-1]} {fqn!r} is stored as a pickle ({rel})")
            if kind == "constants" and not path_name.startswith("tensor_"):
                raise _refused(uri, f"its constant {fqn!r} is a custom or opaque object ({path_name!r})")


def _check_program(uri: str, program: Any) -> None:
    """Node targets, shape expressions and custom objects of the serialized program; drops the guard
    code and the metadata torch would resolve to Python objects (in place)."""
    if not isinstance(program, dict) or "graph_module" not in program:
        raise ModelLoadError(f"model {uri}: models/{MODEL}.json is not a serialized ExportedProgram")
    program["guards_code"] = []
    for key in program.get("range_constraints") or {}:
        if not _SYMBOL.fullmatch(str(key)):
            raise _refused(uri, f"its range constraint names {str(key)[:80]!r}, which is not a shape symbol")
    for node in _walk(program):
        if "as_custom_obj" in node:
            raise _refused(uri, "its program takes a custom object (a script object loaded by pickle)")
        if isinstance(node.get("target"), str) and "inputs" in node and "outputs" in node:
            if not _allowed_target(node["target"]):
                raise _refused(
                    uri, f"its graph calls {node['target'][:120]!r}, which is not a torch operator"
                )
            meta = node.get("metadata")
            if isinstance(meta, dict):
                node["metadata"] = {k: v for k, v in meta.items() if k in _KEPT_METADATA}
        expr = node.get("expr_str")
        if expr is not None and not _is_shape_expression(expr):
            raise _refused(uri, f"its shape expression {str(expr)[:120]!r} is not plain shape arithmetic")


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``value``, depth first (iteratively: a deep document cannot exhaust the
    stack)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _allowed_target(target: str) -> bool:
    parts = target.split(".")
    if parts[0] == "_operator":
        return len(parts) == 2 and parts[1] in _OPERATOR_FUNCTIONS
    if parts[0] == "math":
        return len(parts) == 2 and parts[1] in _MATH_FUNCTIONS
    if parts[0] != "torch":
        return False
    if len(parts) == 2:
        return parts[1] in _TORCH_FUNCTIONS
    if parts[1] != "ops" or len(parts) not in (4, 5):
        return False
    namespace, name = parts[2], parts[3]
    if namespace == "higher_order":
        return name in _HIGHER_ORDER_OPS
    return namespace in _OP_NAMESPACES and not name.startswith("__") and all(p.isidentifier() for p in parts)


def _is_shape_expression(expr: Any) -> bool:
    if not isinstance(expr, str) or len(expr) > _MAX_EXPR_CHARS:
        return False
    pos = 0
    while pos < len(expr):
        token = _TOKEN.match(expr, pos)
        if token is None:
            return False
        name = token.group("name")
        if name is not None and not (_SYMBOL.fullmatch(name) or name in _SHAPE_FUNCTIONS):
            return False
        pos = token.end()
    return True


def _rebuild(members: dict[str, bytes], root: str) -> bytes:
    """A new archive of the checked members, in memory (torch loads this copy, not the file)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for rel, blob in members.items():
            zf.writestr(f"{root}/{rel}" if root else rel, blob)
    return out.getvalue()


@contextlib.contextmanager
def _refuse_unpickling() -> Iterator[None]:
    """While torch loads the checked archive: ``torch.load`` only with ``weights_only=True``, and the
    free unpicklers torch's archive reader calls raise ``UnsafeArchiveError``."""
    import torch
    from torch.export.pt2_archive import _package

    real_load = torch.load

    def weights_only_load(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("weights_only") is False:
            raise UnsafeArchiveError("torch.load(weights_only=False)")
        kwargs["weights_only"] = True
        return real_load(*args, **kwargs)

    class _NoPickle:
        @staticmethod
        def loads(*_: Any, **__: Any) -> Any:
            raise UnsafeArchiveError("pickle.loads")

    def no_script_object(*_: Any, **__: Any) -> Any:
        raise UnsafeArchiveError("torch._C._pickle_load_obj")

    saved = [(torch, "load", real_load), (_package, "pickle", _package.pickle)]
    saved.append((torch._C, "_pickle_load_obj", torch._C._pickle_load_obj))
    torch.load = weights_only_load
    _package.pickle = _NoPickle  # type: ignore[assignment]
    torch._C._pickle_load_obj = no_script_object
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
