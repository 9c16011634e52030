"""A hostile ``.pt2`` (torch.export archive) is refused before anything in it runs.

Each test rewrites members of a real archive saved by ``torch.export.save`` into one that would run a
shell command on load (it touches a marker file), loads it through squeezeflow, and checks that the
model is refused with a message naming the member and that the marker never appears. The tests marked
``really runs`` load the same archive with plain ``torch.export.load`` and see the marker appear: they
keep the refusals from passing vacuously (if a later torch stops running a payload, they say so).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from squeezeflow.errors import ModelLoadError
from squeezeflow.models.sources import load_torch_model
from squeezeflow.spec.job import ModelSource


class _Payload:
    """Unpickled, it runs ``touch marker``; with ``carry_on`` it then also returns what the loader
    expects of example inputs (``((x,), {})``), so the job would carry on as if nothing happened."""

    def __init__(self, marker: Path, carry_on: bool) -> None:
        self.marker, self.carry_on = marker, carry_on

    def __reduce__(self) -> tuple[Any, ...]:
        if self.carry_on:
            code = (
                f"(__import__('os').system('touch {self.marker}'), "
                "((__import__('torch').zeros(2, 1, 28, 28),), {}))[1]"
            )
            return (eval, (code,))
        return (os.system, (f"touch {self.marker}",))


def _pickled(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def good_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real archive with a dynamic batch dimension (so it carries shape expressions)."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (torch.zeros(2, 1, 28, 28),), dynamic_shapes=({0: batch},))
    path = tmp_path_factory.mktemp("pt2") / "good.pt2"
    torch.export.save(program, path)
    return path


def _rewrite(
    good: Path,
    out: Path,
    edit: Callable[[str, bytes], bytes] = lambda _n, b: b,
    extra: dict[str, bytes] | None = None,
) -> Path:
    """A copy of ``good`` with each member passed through ``edit(name below the root, bytes)`` and
    ``extra`` members added (names below the root)."""
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(out, "w") as dst:
        root = src.namelist()[0].split("/", 1)[0]
        for info in src.infolist():
            dst.writestr(info, edit(info.filename[len(root) + 1 :], src.read(info)))
        for name, blob in (extra or {}).items():
            dst.writestr(f"{root}/{name}", blob)
    return out


def _edit_program(change: Callable[[dict[str, Any]], None]) -> Callable[[str, bytes], bytes]:
    def edit(name: str, blob: bytes) -> bytes:
        if name != "models/model.json":
            return blob
        doc = json.loads(blob)
        change(doc)
        return json.dumps(doc).encode()

    return edit


def _load(path: Path) -> Any:
    return load_torch_model(ModelSource(format="exported_program", uri=str(path)), path)


def _refused(path: Path, message: str, marker: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        _load(path)
    text = str(err.value)
    assert text.startswith(f"model {path} is refused: "), text
    assert re.search(message, text), text
    assert not marker.exists(), "the payload ran"


def _sample_inputs(marker: Path, carry_on: bool) -> Callable[[str, bytes], bytes]:
    payload = _pickled(_Payload(marker, carry_on))
    return lambda name, blob: payload if name == "data/sample_inputs/model.pt" else blob


def test_a_clean_archive_loads_and_runs(good_pt2: Path) -> None:
    program = _load(good_pt2)
    assert isinstance(program, torch.export.ExportedProgram)
    assert program.module()(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("carry_on", [False, True], ids=["payload-fails-the-load", "payload-carries-on"])
def test_example_inputs_that_run_code_are_refused_and_never_unpickled(
    good_pt2: Path, tmp_path: Path, carry_on: bool
) -> None:
    marker = tmp_path / "pwned"
    bad = _rewrite(good_pt2, tmp_path / "model.pt2", _sample_inputs(marker, carry_on))
    refused_global = "eval" if carry_on else "posix.system"
    _refused(
        bad,
        rf"its member 'data/sample_inputs/model\.pt' holds pickled Python objects that "
        rf"torch\.load\(weights_only=True\) refuses \(.*GLOBAL {re.escape(refused_global)}.*\); "
        r"torch would load it again with weights_only=False",
        marker,
    )


def test_really_runs_plain_torch_export_load_runs_the_example_inputs_payload(
    good_pt2: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    bad = _rewrite(good_pt2, tmp_path / "model.pt2", _sample_inputs(marker, carry_on=True))
    # torch's "Fallback to weights_only=False succeeded" warning has a format bug that pytest's log
    # capture raises as a TypeError; outside pytest the load succeeds
    with contextlib.suppress(TypeError):
        torch.export.load(bad)
    assert marker.exists()


def test_a_weight_stored_as_a_pickle_is_refused(good_pt2: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = _pickled(_Payload(marker, carry_on=False))

    def edit(name: str, blob: bytes) -> bytes:
        if name == "data/weights/model_weights_config.json":
            config = json.loads(blob)
            first = next(iter(config["config"].values()))
            first["use_pickle"] = True
            return json.dumps(config).encode()
        return payload if name == "data/weights/weight_0" else blob

    _refused(_rewrite(good_pt2, tmp_path / "m.pt2", edit), r"its weight '.+' is stored as a pickle", marker)


def test_compiled_code_in_the_archive_is_refused(good_pt2: Path, tmp_path: Path) -> None:
    bad = _rewrite(good_pt2, tmp_path / "m.pt2", extra={"data/aotinductor/model/model.so": b"\x7fELF"})
    _refused(
        bad, r"its member 'data/aotinductor/model/model\.so' is compiled AOTInductor code", tmp_path / "x"
    )


def _first_expression(doc: dict[str, Any]) -> dict[str, Any]:
    stack: list[Any] = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "expr_str" in item:
                return item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    raise AssertionError("the archive has no shape expression (export with a dynamic dimension)")


def _expression_payload(marker: Path) -> Callable[[str, bytes], bytes]:
    def change(doc: dict[str, Any]) -> None:
        _first_expression(doc)["expr_str"] = f"__import__('os').system('touch {marker}')"

    return _edit_program(change)


def test_a_shape_expression_that_is_python_code_is_refused(good_pt2: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = _rewrite(good_pt2, tmp_path / "m.pt2", _expression_payload(marker))
    _refused(
        bad, r"its shape expression \"__import__\('os'\)\.system.*\" is not plain shape arithmetic", marker
    )


def test_really_runs_plain_torch_export_load_evaluates_shape_expressions(
    good_pt2: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    bad = _rewrite(good_pt2, tmp_path / "m.pt2", _expression_payload(marker))
    with pytest.raises(Exception):  # noqa: B017 - what fails after the payload ran does not matter
        torch.export.load(bad)
    assert marker.exists()


def test_a_graph_that_calls_a_python_function_is_refused(good_pt2: Path, tmp_path: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"

    bad = _rewrite(good_pt2, tmp_path / "m.pt2", _edit_program(change))
    _refused(bad, r"its graph calls 'torch\.os\.system', which is not a torch operator", tmp_path / "x")


def test_guard_code_is_not_run(good_pt2: Path, tmp_path: Path) -> None:
    """``guards_code`` is Python source that ``ExportedProgram.module()`` compiles into its input guard;
    squeezeflow drops it (it feeds the dataset's shape itself)."""
    marker = tmp_path / "pwned"

    def change(doc: dict[str, Any]) -> None:
        doc["guards_code"] = [f"__import__('os').system('touch {marker}') == 0"]

    program = _load(_rewrite(good_pt2, tmp_path / "m.pt2", _edit_program(change)))
    program.module()(torch.zeros(2, 1, 28, 28))
    assert not marker.exists()


def test_a_member_that_declares_far_more_bytes_than_the_file_holds_is_refused(
    good_pt2: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bomb.pt2"
    with zipfile.ZipFile(good_pt2) as src, zipfile.ZipFile(bad, "w") as dst:
        root = src.namelist()[0].split("/", 1)[0]
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr(f"{root}/extra/notes", b"\0" * (64 << 20), compress_type=zipfile.ZIP_DEFLATED)
    _refused(bad, r"its members declare [\d,]+ bytes, far more than the [\d,]+-byte file", tmp_path / "x")
