"""Exporting a PyTorch module to the ONNX file squeezeflow ships."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from squeezeflow.models.sources import export_onnx, strip_debug_metadata
from squeezeflow.runtime import predict_logits
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


def test_a_dynamically_quantized_model_is_evaluated_one_sample_at_a_time(tmp_path: Path) -> None:
    # Dynamic int8 takes the activations' range over the whole input tensor, so a sample's answer
    # depends on the samples batched with it; it is deployed at batch 1 and evaluated that way.
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from squeezeflow.runtime import batch_dependent

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4)).eval()
    fp32 = export_onnx(module, [16], tmp_path / "fp32.onnx")
    int8 = tmp_path / "int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    assert batch_dependent(int8) and not batch_dependent(fp32)
    x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    x[7] *= 200.0  # one outlier widens a shared range for every sample batched with it
    one_at_a_time = np.concatenate([predict_logits(int8, x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_array_equal(predict_logits(int8, x), one_at_a_time)
    assert not np.allclose(predict_logits(int8, x, batch_size=300), one_at_a_time, atol=1e-3)
