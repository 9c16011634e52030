"""Bad input through the real CLI: every case exits 2 with a message that names the problem, nothing
reaches the MLflow registry, and no pickled payload ever runs.

Each case is a real ``squeezeflow run`` subprocess on real (small) data derived from Animal-MNIST and
a real trained model, damaged in one specific way: corrupt and truncated ONNX, state_dict, TorchScript
and ExportedProgram files, pickles that would run a command when loaded (the marker file they would
create must never appear), models whose outputs do not match the labels or whose inputs do not match
the samples, datasets with NaN/inf, wrong dtypes and shapes, empty splits, labels out of range,
mismatched lengths, archive members and s3:// keys that climb out of their directory, and specs with
bad tolerances or unknown devices. The cases are independent processes, so the module starts the
selected ones side by side and each test waits for its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

from tests.reference import job_doc, write_spec

pytestmark = pytest.mark.integration

SQUEEZEFLOW = str(Path(sys.executable).with_name("squeezeflow"))
WORKERS = max(2, min(4, os.cpu_count() or 2))
CASE_TIMEOUT_S = 300


@dataclass(frozen=True)
class Inputs:
    """What a case builds its bad input from, and the directory it may write into."""

    model: Path  # the trained tiny CNN state_dict
    data: Path  # a clean 600/200/200 subset of Animal-MNIST
    dir: Path  # this case's own directory

    def copy_data(self) -> Path:
        dest = self.dir / "data"
        shutil.copytree(self.data, dest)
        return dest

    def doc(self, model: Path | None = None, data: Path | None = None) -> dict[str, Any]:
        """A valid job document for the tiny model (state_dict + factory) on the clean data, with
        the model file or the data directory swapped when given."""
        doc = job_doc(self.model, data or self.data, name="bad-input")
        if model is not None:
            doc["model"] = {**doc["model"], "uri": str(model)}
        return doc

    def spec(self, doc: dict[str, Any]) -> Path:
        return write_spec(self.dir / "job.yaml", doc)


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Inputs], Path]  # writes the bad input and returns the job spec
    message: str  # regex that must match the (whitespace-normalised) error on stderr
    gx_report: str | None = None  # the split whose Great Expectations report must show the failure
    xfail: str | None = None  # a known product bug: why this case does not exit 2 yet

    @property
    def spec_error(self) -> bool:
        return self.id.startswith("spec-")


@dataclass
class Outcome:
    returncode: int
    stderr: str
    stdout: str
    dir: Path

    @property
    def error(self) -> str:
        return " ".join(self.stderr.split())


# -- model cases ------------------------------------------------------------------------------------


class _RunsShellOnUnpickle:
    """A pickle payload that would run a shell command if anything unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _marker(inp: Inputs) -> Path:
    return inp.dir / "pwned"


def corrupt_state_dict(inp: Inputs) -> Path:
    bad = inp.dir / "weights.pt"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    return inp.spec(inp.doc(model=bad))


def truncated_state_dict(inp: Inputs) -> Path:
    blob = inp.model.read_bytes()
    bad = inp.dir / "weights.pt"
    bad.write_bytes(blob[: len(blob) // 2])
    return inp.spec(inp.doc(model=bad))


def _write_onnx_spec(inp: Inputs, path: Path) -> Path:
    doc = inp.doc()
    doc["model"] = {"format": "onnx", "uri": str(path)}
    return inp.spec(doc)


def _export_tiny_onnx(inp: Inputs) -> Path:
    import torch

    from squeezeflow.models.sources import export_onnx
    from squeezeflow.zoo.cnn import tiny_cnn

    model = tiny_cnn()
    model.load_state_dict(torch.load(inp.model, map_location="cpu", weights_only=True))
    return export_onnx(model, [1, 28, 28], inp.dir / "tiny.onnx")


def corrupt_onnx(inp: Inputs) -> Path:
    # brackets in the path: the message must show it as is (it is not console markup)
    bad = inp.dir / "[v2]" / "model.onnx"
    bad.parent.mkdir()
    bad.write_bytes(np.random.default_rng(1).bytes(4096))
    return _write_onnx_spec(inp, bad)


def truncated_onnx(inp: Inputs) -> Path:
    blob = _export_tiny_onnx(inp).read_bytes()
    bad = inp.dir / "model.onnx"
    bad.write_bytes(blob[: len(blob) // 2])
    return _write_onnx_spec(inp, bad)


def state_dict_for_another_factory(inp: Inputs) -> Path:
    doc = inp.doc()
    doc["model"] = {**doc["model"], "factory": "squeezeflow.zoo.cnn:small_resnet"}
    return inp.spec(doc)


def pickle_that_runs_code(inp: Inputs) -> Path:
    import torch

    bad = inp.dir / "weights.pt"
    torch.save(_RunsShellOnUnpickle(_marker(inp)), bad)
    return inp.spec(inp.doc(model=bad))


def five_outputs_for_ten_classes(inp: Inputs) -> Path:
    from torch import nn

    from squeezeflow.models.sources import export_onnx

    path = export_onnx(nn.Sequential(nn.Flatten(), nn.Linear(784, 5)), [1, 28, 28], inp.dir / "five.onnx")
    return _write_onnx_spec(inp, path)


def _traced_tiny(inp: Inputs) -> Any:
    import torch

    from squeezeflow.zoo.cnn import tiny_cnn

    model = tiny_cnn()
    model.load_state_dict(torch.load(inp.model, map_location="cpu", weights_only=True))
    return model.eval()


def _write_model_spec(inp: Inputs, fmt: str, path: Path) -> Path:
    doc = inp.doc()
    doc["model"] = {"format": fmt, "uri": str(path)}
    return inp.spec(doc)


def truncated_torchscript(inp: Inputs) -> Path:
    import torch

    good = inp.dir / "good.ts"
    torch.jit.save(torch.jit.trace(_traced_tiny(inp), torch.zeros(2, 1, 28, 28)), good)
    bad = inp.dir / "model.ts"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return _write_model_spec(inp, "torchscript", bad)


def exported_program_with_a_member_outside_the_archive(inp: Inputs) -> Path:
    """A valid .pt2 archive plus a member named ../../pwned (what a zip-slip payload looks like)."""
    import zipfile

    import torch

    good = inp.dir / "good.pt2"
    torch.export.save(torch.export.export(_traced_tiny(inp), (torch.zeros(2, 1, 28, 28),)), good)
    bad = inp.dir / "model.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for member in src.infolist():
            dst.writestr(member, src.read(member.filename))
        dst.writestr("../../pwned", b"written outside the archive if anything extracted it")
    return _write_model_spec(inp, "exported_program", bad)


class _RunsShellAndCarriesOn:
    """Unpickled, runs a shell command and then returns what torch expects of an ExportedProgram's
    example inputs (``((x,), {})``), so the job would carry on as if nothing had happened."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        code = (
            f"(__import__('os').system('touch {self.marker}'), "
            "((__import__('torch').zeros(2, 1, 28, 28),), {}))[1]"
        )
        return (eval, (code,))


def _exported_program_with_example_inputs(payload: Callable[[Path], Any]) -> Callable[[Inputs], Path]:
    """A valid .pt2 whose data/sample_inputs/model.pt member is rewritten to ``payload(marker)``."""

    def build(inp: Inputs) -> Path:
        import io
        import zipfile

        import torch

        good = inp.dir / "good.pt2"
        batch = torch.export.Dim("batch")
        torch.export.save(
            torch.export.export(
                _traced_tiny(inp), (torch.zeros(2, 1, 28, 28),), dynamic_shapes=({0: batch},)
            ),
            good,
        )
        evil = io.BytesIO()
        torch.save(payload(_marker(inp)), evil)
        bad = inp.dir / "model.pt2"
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
            for member in src.infolist():
                is_sample = member.filename.endswith("data/sample_inputs/model.pt")
                dst.writestr(member, evil.getvalue() if is_sample else src.read(member.filename))
        return _write_model_spec(inp, "exported_program", bad)

    return build


def exported_program_without_a_dynamic_batch(inp: Inputs) -> Path:
    import torch

    path = inp.dir / "fixed.pt2"
    torch.export.save(torch.export.export(_traced_tiny(inp), (torch.zeros(2, 1, 28, 28),)), path)
    return _write_model_spec(inp, "exported_program", path)


def onnx_with_a_fixed_batch_of_one(inp: Inputs) -> Path:
    import torch

    path = inp.dir / "batch1.onnx"
    torch.onnx.export(
        _traced_tiny(inp), (torch.zeros(1, 1, 28, 28),), str(path), input_names=["input"], dynamo=False
    )
    return _write_onnx_spec(inp, path)


def onnx_that_asks_for_160_gb(inp: Inputs) -> Path:
    """A valid graph that adds the sum of a 40-billion-float zero tensor to its logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.zeros((784, 10), np.float32), "W")
    shape = numpy_helper.from_array(np.array([40_000_000_000], np.int64), "shape")
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["scores"]),
        helper.make_node("ConstantOfShape", ["shape"], ["big"], value=zero),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
        helper.make_node("Add", ["scores", "total"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "huge",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [weights, shape],
    )
    path = inp.dir / "huge.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return _write_onnx_spec(inp, path)


def onnx_external_data_outside_its_folder(inp: Inputs) -> Path:
    import onnx

    model = onnx.load(str(_export_tiny_onnx(inp)))
    folder = inp.dir / "model"
    folder.mkdir()
    onnx.save(model, str(folder / "tiny.onnx"), save_as_external_data=True, location="weights.bin")
    (inp.dir / "weights.bin").write_bytes((folder / "weights.bin").read_bytes())
    patched = onnx.load(str(folder / "tiny.onnx"), load_external_data=False)
    for tensor in patched.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../weights.bin"
    onnx.save(patched, str(folder / "tiny.onnx"))
    return _write_onnx_spec(inp, folder / "tiny.onnx")


def factory_that_runs_a_command(inp: Inputs) -> Path:
    doc = inp.doc()
    doc["model"] = {
        **doc["model"],
        "factory": "os:system",
        "factory_kwargs": {"command": f"touch {_marker(inp)}"},
    }
    return inp.spec(doc)


def factory_that_returns_no_module(inp: Inputs) -> Path:
    doc = inp.doc()
    doc["model"] = {**doc["model"], "factory": "numpy:zeros", "factory_kwargs": {"shape": 3}}
    return inp.spec(doc)


def input_shape_mismatch(inp: Inputs) -> Path:
    from torch import nn

    from squeezeflow.models.sources import export_onnx

    path = export_onnx(nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10)), [1, 32, 32], inp.dir / "m32.onnx")
    return _write_onnx_spec(inp, path)


def nan_outputs(inp: Inputs) -> Path:
    import torch
    from torch import nn

    from squeezeflow.models.sources import export_onnx

    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with torch.no_grad():
        model[1].weight.fill_(float("nan"))
    return _write_onnx_spec(inp, export_onnx(model, [1, 28, 28], inp.dir / "nan.onnx"))


def s3_model_key_climbs_out(inp: Inputs) -> Path:
    doc = inp.doc()
    doc["model"] = {**doc["model"], "uri": "s3://models-bucket/team-a/../team-b/weights.pt"}
    return inp.spec(doc)


def s3_data_prefix_climbs_out(inp: Inputs) -> Path:
    doc = inp.doc()
    doc["data"] = {"uri": "s3://data-bucket/public/../private/animals/"}
    return inp.spec(doc)


# -- dataset cases ----------------------------------------------------------------------------------


def _edit_split(split: str, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[Inputs], Path]:
    """A builder that rewrites one split's npz through ``edit`` (arrays in, arrays out)."""

    def build(inp: Inputs) -> Path:
        data = inp.copy_data()
        with np.load(data / f"{split}.npz", allow_pickle=False) as z:
            arrays = {k: z[k].copy() for k in z.files}
        np.savez(data / f"{split}.npz", **edit(arrays))
        return inp.spec(inp.doc(data=data))

    return build


def _set(key: str, index: tuple[int, ...], value: float) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def edit(a: dict[str, Any]) -> dict[str, Any]:
        a[key][index] = value
        return a

    return edit


def object_array_split(inp: Inputs) -> Path:
    data = inp.copy_data()
    with np.load(data / "train.npz", allow_pickle=False) as z:
        y = z["y"].copy()
    x = np.empty(len(y), dtype=object)
    x[:] = [_RunsShellOnUnpickle(_marker(inp))] * len(y)
    np.savez(data / "train.npz", x=x, y=y)
    return inp.spec(inp.doc(data=data))


def missing_dataset_json(inp: Inputs) -> Path:
    data = inp.copy_data()
    (data / "dataset.json").unlink()
    return inp.spec(inp.doc(data=data))


def split_path_escapes_the_directory(inp: Inputs) -> Path:
    data = inp.copy_data()
    inner = data / "inner"
    inner.mkdir()
    for f in ("dataset.json", "val.npz", "test.npz"):
        shutil.copy(data / f, inner / f)
    meta = json.loads((inner / "dataset.json").read_text())
    meta["splits"] = {"train": "../train.npz", "val": "val.npz", "test": "test.npz"}
    (inner / "dataset.json").write_text(json.dumps(meta))
    return inp.spec(inp.doc(data=inner))


def _edit_meta(**changes: Any) -> Callable[[Inputs], Path]:
    def build(inp: Inputs) -> Path:
        data = inp.copy_data()
        meta = json.loads((data / "dataset.json").read_text())
        meta.update(changes)
        (data / "dataset.json").write_text(json.dumps(meta))
        return inp.spec(inp.doc(data=data))

    return build


def npz_header_claims_terabytes(inp: Inputs) -> Path:
    """A 9 KB train.npz whose x header declares shape (1e11, 1, 28, 28)."""
    import io
    import zipfile

    data = inp.copy_data()
    x = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        x, {"descr": "<f4", "fortran_order": False, "shape": (10**11, 1, 28, 28)}
    )
    x.write(b"\0" * 8192)
    y = io.BytesIO()
    np.save(y, np.zeros(600, np.int64))
    with zipfile.ZipFile(data / "train.npz", "w") as zf:
        zf.writestr("x.npy", x.getvalue())
        zf.writestr("y.npy", y.getvalue())
    return inp.spec(inp.doc(data=data))


def split_is_a_text_file(inp: Inputs) -> Path:
    data = inp.copy_data()
    (data / "val.npz").write_text("image,label\ncat.png,3\n")
    return inp.spec(inp.doc(data=data))


def train_file_named_for_the_test_split(inp: Inputs) -> Path:
    return _edit_meta(splits={"train": "train.npz", "val": "val.npz", "test": "train.npz"})(inp)


def val_and_test_hold_the_same_data(inp: Inputs) -> Path:
    data = inp.copy_data()
    shutil.copy(data / "val.npz", data / "test.npz")
    return inp.spec(inp.doc(data=data))


# -- spec cases -------------------------------------------------------------------------------------


def _spec_edit(edit: Callable[[dict[str, Any]], None]) -> Callable[[Inputs], Path]:
    def build(inp: Inputs) -> Path:
        doc = inp.doc()
        edit(doc)
        return inp.spec(doc)

    return build


def _unknown_field(doc: dict[str, Any]) -> None:
    doc["tolerence"] = {"max_drop": 0.02}


def _bad_tolerance(doc: dict[str, Any]) -> None:
    doc["tolerance"] = {"mode": "absolute", "max_drop": 2}


def _negative_tolerance(doc: dict[str, Any]) -> None:
    doc["tolerance"] = {"mode": "relative", "max_drop": -0.01}


def _unknown_tolerance_mode(doc: dict[str, Any]) -> None:
    doc["tolerance"] = {"mode": "percent", "max_drop": 0.01}


def _unknown_runtime(doc: dict[str, Any]) -> None:
    doc["devices"] = [{**doc["devices"][0], "runtime": "tensorrt"}]


def _unknown_target_device(doc: dict[str, Any]) -> None:
    doc["target_device"] = "jetson-orin"


def _no_registry(doc: dict[str, Any]) -> None:
    del doc["registry"]


def spec_with_a_duplicate_key(inp: Inputs) -> Path:
    """The gate's max_drop written twice: the second (0.5) would silently win."""
    path = inp.spec(inp.doc())
    text = path.read_text().replace("  max_drop: 0.01\n", "  max_drop: 0.01\n  max_drop: 0.5\n", 1)
    path.write_text(text)
    return path


def spec_with_an_anchor_bomb(inp: Inputs) -> Path:
    """954 bytes of nested YAML aliases in factory_kwargs that expand to 387 million values."""
    lines = ['lol0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"lol{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = inp.spec(inp.doc())
    body = path.read_text().replace(
        "  factory: squeezeflow.zoo.cnn:tiny_cnn\n",
        "  factory: squeezeflow.zoo.cnn:tiny_cnn\n  factory_kwargs: {bomb: *l8}\n",
        1,
    )
    path.write_text("\n".join(lines) + "\n" + body)
    return path


def _negative_seed(doc: dict[str, Any]) -> None:
    doc["search"] = {**doc["search"], "seed": -1}


def _infinite_budget(doc: dict[str, Any]) -> None:
    doc["search"] = {**doc["search"], "max_seconds": float("inf")}


CASES = [
    # model
    Case(
        "corrupt-state-dict",
        corrupt_state_dict,
        r"\S+/weights\.pt cannot be loaded safely: torch\.load with weights_only=True refused it \(.+\)\. "
        r"The file is corrupt or holds pickled Python objects",
    ),
    Case(
        "truncated-state-dict",
        truncated_state_dict,
        r"\S+/weights\.pt is not a readable PyTorch file \(corrupt or truncated\?\)",
    ),
    Case("corrupt-onnx", corrupt_onnx, r"model \S+/\[v2\]/model\.onnx is not a valid ONNX model"),
    Case("truncated-onnx", truncated_onnx, r"model \S+/model\.onnx is not a valid ONNX model: DecodeError"),
    Case(
        "state-dict-for-another-factory",
        state_dict_for_another_factory,
        r"tiny_cnn\.pt does not fit squeezeflow\.zoo\.cnn:small_resnet: \d+ missing keys .*"
        r"shape mismatches \(file vs model\) .*fc\.weight \[10, 32\] vs \[10, 64\]",
    ),
    Case(
        "pickle-that-runs-code",
        pickle_that_runs_code,
        r"weights\.pt cannot be loaded safely: torch\.load with weights_only=True refused it "
        r"\(.*GLOBAL posix\.system",
    ),
    Case(
        "five-outputs-for-ten-classes",
        five_outputs_for_ten_classes,
        r"five\.onnx outputs shape \[200, 5\], but the dataset has 10 classes",
    ),
    Case(
        "nan-outputs",
        nan_outputs,
        r"model \S+/nan\.onnx produces NaN or infinite outputs on the held-out data",
    ),
    Case(
        "input-shape-mismatch",
        input_shape_mismatch,
        r"m32\.onnx .*\[1, 32, 32\].*\[1, 28, 28\]",
    ),
    Case(
        "truncated-torchscript",
        truncated_torchscript,
        r"cannot load torchscript model from \S+/model\.ts: ",
    ),
    Case(
        "exported-program-member-outside-the-archive",
        exported_program_with_a_member_outside_the_archive,
        r"model\.pt2 .*\.\./\.\./pwned",
    ),
    Case(
        "s3-model-key-climbs-out",
        s3_model_key_climbs_out,
        r"s3 URI 's3://models-bucket/team-a/\.\./team-b/weights\.pt' contains '\.\.'",
    ),
    Case(
        "s3-data-prefix-climbs-out",
        s3_data_prefix_climbs_out,
        r"s3 URI 's3://data-bucket/public/\.\./private/animals/dataset\.json' contains '\.\.'",
    ),
    # data: values (Great Expectations)
    Case(
        "nan-in-test-x",
        _edit_split("test", _set("x", (3, 0, 14, 14), float("nan"))),
        r"test: expect_column_values_to_be_in_set \{'column': 'finite'",
        gx_report="test",
    ),
    Case(
        "inf-in-train-x",
        _edit_split("train", _set("x", (5, 0, 0, 0), float("inf"))),
        r"train: expect_column_values_to_be_in_set \{'column': 'finite'",
        gx_report="train",
    ),
    Case(
        "label-out-of-range-in-val",
        _edit_split("val", _set("y", (7,), 10)),
        r"val: expect_column_values_to_be_between \{'column': 'label', 'min_value': 0(\.0)?, "
        r"'max_value': 9(\.0)?\} failed \(unexpected: \[10\]\)",
        gx_report="val",
    ),
    Case(
        "negative-label-in-train",
        _edit_split("train", _set("y", (0,), -1)),
        r"train: expect_column_values_to_be_between \{'column': 'label'.*unexpected: \[-1\]",
        gx_report="train",
    ),
    Case(
        "empty-test-split",
        _edit_split("test", lambda a: {"x": a["x"][:0], "y": a["y"][:0]}),
        r"test: expect_table_row_count_to_be_between",
        gx_report="test",
    ),
    # data: structure
    Case(
        "y-float-labels",
        _edit_split("train", lambda a: {"x": a["x"], "y": a["y"].astype(np.float32)}),
        r"split 'train': y must be integer labels, got float32",
    ),
    Case(
        "y-two-dimensional",
        _edit_split("test", lambda a: {"x": a["x"], "y": a["y"][:, None]}),
        r"split 'test': y must be 1-D, got shape \(200, 1\)",
    ),
    Case(
        "samples-of-another-shape",
        _edit_split("val", lambda a: {"x": np.zeros((len(a["y"]), 1, 32, 32), np.float32), "y": a["y"]}),
        r"split 'val': samples have shape \[1, 32, 32\], dataset\.json says \[1, 28, 28\]",
    ),
    Case(
        "npz-member-outside-the-archive",
        _edit_split("train", lambda a: {**a, "../../pwned": a["y"]}),
        r"split 'train' \(train\.npz\) must hold arrays x and y, has \['\.\./\.\./pwned', 'x', 'y'\]",
    ),
    Case(
        "x-float64",
        _edit_split("val", lambda a: {"x": a["x"].astype(np.float64), "y": a["y"]}),
        r"split 'val': x must be float32 \(features, pixels\) or int64 \(token ids\), got float64",
    ),
    Case(
        "x-y-length-mismatch",
        _edit_split("train", lambda a: {"x": a["x"], "y": a["y"][:-1]}),
        r"split 'train': x has 600 samples but y has 599 labels",
    ),
    Case(
        "npz-extra-key",
        _edit_split("test", lambda a: {**a, "w": a["y"]}),
        r"split 'test' \(test\.npz\) must hold arrays x and y, has \['w', 'x', 'y'\]",
    ),
    Case(
        "npz-missing-key",
        _edit_split("val", lambda a: {"x": a["x"]}),
        r"split 'val' \(val\.npz\) must hold arrays x and y, has \['x'\]",
    ),
    Case(
        "npz-object-array",
        object_array_split,
        r"split 'train' \(train\.npz\) cannot be read safely: Object arrays cannot be loaded",
    ),
    Case("dataset-json-missing", missing_dataset_json, r"dataset\.json is missing"),
    Case(
        "split-path-escapes-the-directory",
        split_path_escapes_the_directory,
        r"dataset\.json names split file '\.\./train\.npz': only plain file names are allowed",
    ),
    # spec
    Case("spec-unknown-field", _spec_edit(_unknown_field), r"tolerence: unknown field"),
    Case(
        "spec-max-drop-2",
        _spec_edit(_bad_tolerance),
        r"tolerance\.max_drop: Input should be less than 1 \(got 2\)",
    ),
    Case(
        "spec-unknown-target-device",
        _spec_edit(_unknown_target_device),
        r"target_device 'jetson-orin' is not one of the devices \['cpu-2t'\]",
    ),
    Case("spec-missing-registry", _spec_edit(_no_registry), r"registry: Field required"),
    Case(
        "spec-negative-max-drop",
        _spec_edit(_negative_tolerance),
        r"tolerance\.max_drop: Input should be greater than or equal to 0 \(got -0\.01\)",
    ),
    Case(
        "spec-unknown-tolerance-mode",
        _spec_edit(_unknown_tolerance_mode),
        r"tolerance\.mode: Input should be 'absolute' or 'relative' \(got 'percent'\)",
    ),
    Case(
        "spec-unknown-device-runtime",
        _spec_edit(_unknown_runtime),
        r"devices\.0\.runtime: Input should be .*\(got 'tensorrt'\)",
    ),
    # added with issue 15 (an adversarial pass): code execution, memory exhaustion, silent loosening
    Case(
        "exported-program-example-inputs-run-code",
        _exported_program_with_example_inputs(_RunsShellOnUnpickle),
        r"model \S+/model\.pt2 is refused: its member 'data/sample_inputs/model\.pt' holds pickled Python "
        r"objects that torch\.load\(weights_only=True\) refuses \(.*GLOBAL posix\.system",
    ),
    Case(
        "exported-program-example-inputs-run-code-and-carry-on",
        _exported_program_with_example_inputs(_RunsShellAndCarriesOn),
        r"model \S+/model\.pt2 is refused: its member 'data/sample_inputs/model\.pt' .*GLOBAL eval",
    ),
    Case(
        "exported-program-without-a-dynamic-batch",
        exported_program_without_a_dynamic_batch,
        r"model \S+/fixed\.pt2 accepts only batch 2 .*exported with dynamic_shapes",
    ),
    Case(
        "onnx-with-a-fixed-batch-of-one",
        onnx_with_a_fixed_batch_of_one,
        r"model \S+/batch1\.onnx accepts only batch 1 \(its input 'input' has a fixed first dimension\)",
    ),
    Case(
        "onnx-that-asks-for-160-gb",
        onnx_that_asks_for_160_gb,
        r"model \S+/huge\.onnx needs more memory than this machine can give it \(160,000,000,000 bytes",
    ),
    Case(
        "onnx-external-data-outside-its-folder",
        onnx_external_data_outside_its_folder,
        r"model \S+/model/tiny\.onnx refers to weights at '\.\./weights\.bin', outside its own folder",
    ),
    Case(
        "factory-that-runs-a-command",
        factory_that_runs_a_command,
        r"model factory 'os:system' is in Python's standard library, which builds and scores no models",
    ),
    Case(
        "factory-that-returns-no-module",
        factory_that_returns_no_module,
        r"model factory 'numpy:zeros' returned ndarray, not a torch\.nn\.Module",
    ),
    Case(
        "dataset-with-a-billion-classes",
        _edit_meta(num_classes=1_000_000_000),
        r"dataset\.json is not a squeezeflow\.npz/v1 descriptor: num_classes: Input should be less than or "
        r"equal to 100000",
    ),
    Case(
        "npz-header-claims-terabytes",
        npz_header_claims_terabytes,
        r"split 'train' \(train\.npz\): the header of x declares shape \(100000000000, 1, 28, 28\) of "
        r"float32 \(313,600,000,000,000 bytes\), but the member holds 8,192 bytes",
    ),
    Case(
        "split-is-a-text-file",
        split_is_a_text_file,
        r"split 'val' \(val\.npz\) is not an \.npz archive \(a zip of \.npy arrays, as numpy\.savez "
        r"writes\): it starts with b'image,label",
    ),
    Case(
        "test-split-is-the-train-file",
        train_file_named_for_the_test_split,
        r"dataset\.json names 'train\.npz' for both splits 'train' and 'test'",
    ),
    Case(
        "val-and-test-hold-the-same-data",
        val_and_test_hold_the_same_data,
        r"splits 'val' \(val\.npz\) and 'test' \(test\.npz\) hold the same data \(same SHA-256\)",
    ),
    Case(
        "spec-duplicate-key",
        spec_with_a_duplicate_key,
        r"invalid job spec \S+/job\.yaml: duplicate key 'max_drop' \(lines \d+ and \d+\)",
    ),
    Case(
        "spec-anchor-bomb",
        spec_with_an_anchor_bomb,
        r"invalid job spec \S+/job\.yaml: it expands to more than 100,000 values once its YAML aliases",
    ),
    Case(
        "spec-negative-seed",
        _spec_edit(_negative_seed),
        r"search\.seed: Input should be greater than or equal to 0 \(got -1\)",
    ),
    Case(
        "spec-infinite-time-budget",
        _spec_edit(_infinite_budget),
        r"search\.max_seconds: Input should be a finite number \(got inf\)",
    ),
]


def _run_cli(spec: Path, case_dir: Path, mlflow_db: Path | None) -> Outcome:
    if mlflow_db is not None:
        shutil.copy(mlflow_db, case_dir / "mlflow.db")
    proc = subprocess.run(
        [
            SQUEEZEFLOW,
            "run",
            str(spec),
            "--no-progress",
            "--artifacts",
            str(case_dir / "artifacts"),
            "--tracking-uri",
            f"sqlite:///{case_dir / 'mlflow.db'}",
            "--workdir",
            str(case_dir / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=CASE_TIMEOUT_S,
    )
    return Outcome(proc.returncode, proc.stderr, proc.stdout, case_dir)


@pytest.fixture(scope="module")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite store. Creating one takes seconds of schema migrations,
    so each case starts from a copy of this one (spec cases get none: they must not create one)."""
    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model: Path,
    small_data: Path,
    empty_mlflow_db: Path,
) -> Iterator[dict[str, Future[Outcome]]]:
    """Builds the selected cases' inputs, then runs their CLI processes side by side."""
    selected = {
        item.callspec.params["case"].id
        for item in request.session.items
        if hasattr(item, "callspec") and isinstance(item.callspec.params.get("case"), Case)
    }
    futures: dict[str, Future[Outcome]] = {}
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for case in CASES:
            if case.id in selected:
                case_dir = tmp_path_factory.mktemp(case.id)
                spec = case.build(Inputs(model=tiny_model, data=small_data, dir=case_dir))
                db = None if case.spec_error else empty_mlflow_db
                futures[case.id] = pool.submit(_run_cli, spec, case_dir, db)
        yield futures


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=c.xfail)) if c.xfail else c for c in CASES],
    ids=[c.id for c in CASES],
)
def test_bad_input_exits_2_with_a_message_that_names_the_problem(
    case: Case, outcomes: dict[str, Future[Outcome]]
) -> None:
    out = outcomes[case.id].result()
    assert out.returncode == 2, f"exit {out.returncode}\nstderr:\n{out.stderr[-4000:]}"
    assert "Traceback" not in out.stderr, out.stderr[-4000:]
    assert re.search(case.message, out.error), f"{case.message!r} not in:\n{out.stderr[-4000:]}"
    db = out.dir / "mlflow.db"
    if case.spec_error:
        assert out.error.startswith("error (SpecError): invalid job spec"), out.stderr
        assert not db.exists(), "a spec error must stop the job before it touches MLflow"
    else:
        assert (
            MlflowClient(
                tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}"
            ).search_registered_models()
            == []
        )
    assert not (out.dir / "pwned").exists(), "a pickle payload was executed"
    if case.gx_report is not None:
        found = re.search(r"\(report: (\S+)\)", out.error)
        assert found, f"no report location in:\n{out.stderr}"
        report = Path(found.group(1))
        assert report.is_file()
        assert report.resolve().is_relative_to((out.dir / "artifacts").resolve())
        doc = json.loads(report.read_text())
        assert doc[case.gx_report]["success"] is False


def test_the_pickle_payload_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    """Guards the pickle case above against passing vacuously: loaded without weights_only, the same
    payload does create the marker file."""
    import torch

    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pt"
    torch.save(_RunsShellOnUnpickle(marker), path)
    torch.load(path, weights_only=False)
    assert marker.exists()
