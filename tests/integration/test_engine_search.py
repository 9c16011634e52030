"""Passes the engine's search builds candidates from, on a real model (the search itself, through every
front door, is in tests/orchestration/test_same_search_on_every_front_door.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from squeezeflow.errors import PassError
from squeezeflow.models.sources import export_onnx, load_torch_model
from squeezeflow.passes import ModelState, PassContext, get_pass
from squeezeflow.spec.load import parse_spec
from tests.reference import job_doc, library_noise

pytestmark = pytest.mark.integration


def _aa_ctx(tmp_path: Path, animal_mnist: Path, floor_gap: float) -> PassContext:
    val = np.load(animal_mnist / "val.npz")
    train = np.load(animal_mnist / "train.npz")
    return PassContext(
        workdir=tmp_path,
        input_shape=[1, 28, 28],
        train_x=train["x"][:512],
        train_y=train["y"][:512],
        val_x=val["x"][:300],
        val_y=val["y"][:300],
        baseline_val_metric=1.0,
        allowed_drop=floor_gap,
    )


def test_accuracy_aware_int8_keeps_all_layers_quantized_when_accuracy_holds(
    tmp_path: Path, tiny_model: Path, animal_mnist: Path
) -> None:
    spec = parse_spec(job_doc(tiny_model, animal_mnist))
    onnx_path = export_onnx(load_torch_model(spec.model, tiny_model), [1, 28, 28], tmp_path / "tiny.onnx")
    cls = get_pass("ort_static_int8_accuracy_aware")
    ctx = _aa_ctx(tmp_path, animal_mnist, floor_gap=0.5)
    out = cls().run(ModelState(onnx_path=onnx_path), cls.Config(calibration_samples=64), ctx)
    assert out.onnx_path is not None and ctx.notes["accuracy_aware"]["fallback_nodes"] == 0


def test_accuracy_aware_int8_falls_back_layer_by_layer_and_says_when_it_cannot_hold(
    tmp_path: Path, tiny_model: Path, animal_mnist: Path
) -> None:
    spec = parse_spec(job_doc(tiny_model, animal_mnist))
    onnx_path = export_onnx(load_torch_model(spec.model, tiny_model), [1, 28, 28], tmp_path / "tiny.onnx")
    cls = get_pass("ort_static_int8_accuracy_aware")
    # a floor of 100% validation accuracy cannot be reached: the pass must try fallbacks, then say so
    ctx = _aa_ctx(tmp_path, animal_mnist, floor_gap=0.0)
    with pytest.raises(PassError, match=r"after keeping 2 of the most sensitive layers in float"):
        cls().run(
            ModelState(onnx_path=onnx_path), cls.Config(calibration_samples=64, max_fallback_nodes=2), ctx
        )


def test_histogram_calibration_and_export_keep_library_output_out_of_the_console(
    tmp_path: Path,
    tiny_model: Path,
    animal_mnist: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """torch's exporter warns about torchvision on every export and ONNX Runtime's histogram calibrators
    print their progress: neither reaches the console; the prints are in the debug log."""
    spec = parse_spec(job_doc(tiny_model, animal_mnist))
    onnx_path = export_onnx(load_torch_model(spec.model, tiny_model), [1, 28, 28], tmp_path / "tiny.onnx")
    cls = get_pass("ort_static_int8")
    config = cls.Config(calibration_samples=32, calibration_method="percentile")
    with caplog.at_level(logging.DEBUG, logger="squeezeflow.passes.ort_quantize"):
        out = cls().run(ModelState(onnx_path=onnx_path), config, _aa_ctx(tmp_path, animal_mnist, 0.5))
    assert out.onnx_path is not None and out.onnx_path.is_file()
    printed = capfd.readouterr()
    assert library_noise(printed.out + printed.err) == [], printed
    assert "Collecting tensor data" in caplog.text
    assert not [r for r in caplog.records if "torchvision" in r.getMessage()], "torch's exporter warned"
