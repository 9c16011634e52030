"""Exporting a PyTorch module to the ONNX file squeezeflow ships."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from squeezeflow.models import export_onnx, predict_logits, strip_debug_metadata
from squeezeflow.zoo.cnn import small_resnet


def test_exported_models_carry_no_exporter_debug_data_and_compute_the_same_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = small_resnet().eval()
    path = export_onnx(module, [1, 28, 28], tmp_path / "m.onnx")
    model = onnx.load(str(path))
    assert not any(n.metadata_props for n in model.graph.node)
    assert not model.graph.value_info
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(predict_logits(path, x), expected, rtol=1e-4, atol=1e-5)


def test_stripping_debug_data_shrinks_a_file_that_has_it_and_leaves_a_clean_one_alone(tmp_path: Path) -> None:
    module = small_resnet().eval()
    path = export_onnx(module, [1, 28, 28], tmp_path / "m.onnx")
    model = onnx.load(str(path))
    for node in model.graph.node:
        node.metadata_props.add(key="pkg.torch.onnx.stack_trace", value="File x.py, line 1\n" * 20)
    onnx.save(model, str(tmp_path / "traced.onnx"))
    size = (tmp_path / "traced.onnx").stat().st_size
    assert strip_debug_metadata(tmp_path / "traced.onnx") > 0
    assert (tmp_path / "traced.onnx").stat().st_size < size
    assert strip_debug_metadata(path) == 0
