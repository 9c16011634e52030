"""MACs, parameters and weight bytes counted from ONNX graphs: float, static QDQ int8 and dynamic int8,
with the 8-bit integer share told apart, and the float count agreeing with the PyTorch model's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from squeezeflow.onnx_cost import onnx_cost

SHAPE = [1, 8, 8]
# Conv 1->4 channels, 3x3, padding 1: 4*8*8 outputs x 9 MACs; Gemm 256->10: 10 outputs x 256 MACs.
CONV_MACS = 4 * 8 * 8 * 9
GEMM_MACS = 10 * 256
PARAMS = 4 * 9 + 4 + 10 * 256 + 10


def conv_gemm(path: Path) -> Path:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.standard_normal((10, 256)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fc_b"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("Flatten", ["relu"], ["flat"]),
            helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
        ],
        "conv_gemm",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *SHAPE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


class _Calibration:
    def __init__(self) -> None:
        rng = np.random.default_rng(1)
        self._feeds = iter([{"input": rng.random((1, *SHAPE), dtype=np.float32)} for _ in range(8)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def test_float_conv_and_gemm_macs_parameters_and_bytes_are_counted_exactly(tmp_path: Path) -> None:
    cost = onnx_cost(conv_gemm(tmp_path / "f.onnx"), SHAPE)
    assert cost.macs == CONV_MACS + GEMM_MACS
    assert cost.int8_macs == 0 and cost.float_macs == cost.macs
    assert cost.params == PARAMS
    assert cost.weight_bytes == PARAMS * 4
    assert cost.uncounted == {} and cost.unresolved == 0


def test_the_count_is_per_sample_whatever_batch_the_graph_declares(tmp_path: Path) -> None:
    path = conv_gemm(tmp_path / "f.onnx")
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 16  # a fixed batch of 16
    onnx.save(model, path)
    assert onnx_cost(path, SHAPE).macs == CONV_MACS + GEMM_MACS


def test_static_qdq_int8_counts_the_same_macs_all_as_int8_and_excludes_scales_from_parameters(
    tmp_path: Path,
) -> None:
    from onnxruntime.quantization import QuantFormat, quantize_static

    src = conv_gemm(tmp_path / "f.onnx")
    out = tmp_path / "qdq.onnx"
    quantize_static(str(src), str(out), _Calibration(), quant_format=QuantFormat.QDQ)  # type: ignore[arg-type]
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    cost = onnx_cost(out, SHAPE)
    assert cost.macs == CONV_MACS + GEMM_MACS
    assert cost.int8_macs == cost.macs
    assert cost.params == PARAMS  # int8 weights and int32 biases; scales and zero points are not counted
    assert cost.weight_bytes < onnx_cost(src, SHAPE).weight_bytes / 2


def test_dynamic_int8_integer_ops_count_as_int8(tmp_path: Path) -> None:
    from onnxruntime.quantization import quantize_dynamic

    src = conv_gemm(tmp_path / "f.onnx")
    out = tmp_path / "dyn.onnx"
    quantize_dynamic(str(src), str(out), op_types_to_quantize=["Conv", "Gemm", "MatMul"])
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "ConvInteger" in ops and ops & {"MatMulInteger", "DynamicQuantizeMatMul"}
    cost = onnx_cost(out, SHAPE)
    assert cost.macs == CONV_MACS + GEMM_MACS
    assert cost.int8_macs == cost.macs


def test_a_conv_with_only_its_weight_dequantized_is_float_arithmetic(tmp_path: Path) -> None:
    # Weight-only quantization: the data input stays float, so the convolution runs in float.
    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), dtype=np.int8), "w_q")
    scale = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "w_scale")
    zero = numpy_helper.from_array(np.array(0, dtype=np.int8), "w_zero")
    graph = helper.make_graph(
        [
            helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"]),
            helper.make_node("Conv", ["input", "w"], ["out"], pads=[1, 1, 1, 1]),
        ],
        "weight_only",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *SHAPE])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4, 8, 8])],
        [w, scale, zero],
    )
    path = tmp_path / "w.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    cost = onnx_cost(path, SHAPE)
    assert cost.macs == CONV_MACS and cost.int8_macs == 0
    assert cost.params == 36  # the weight, not its scale or zero point


def test_ops_with_macs_that_are_not_counted_are_reported(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((1, 2, 3, 3), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("ConvTranspose", ["input", "w"], ["out"])],
        "deconv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *SHAPE])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 2, 10, 10])],
        [w],
    )
    path = tmp_path / "d.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    cost = onnx_cost(path, SHAPE)
    assert cost.macs == 0
    assert cost.uncounted == {"ConvTranspose": 1}


@pytest.mark.parametrize("factory", ["tiny_cnn", "small_resnet"])
def test_float_macs_of_an_exported_model_match_the_pytorch_modules(tmp_path: Path, factory: str) -> None:
    import torch
    import torch_pruning as tp

    from squeezeflow.devices.worker import torch_cost
    from squeezeflow.models.sources import export_onnx
    from squeezeflow.zoo import cnn

    module = getattr(cnn, factory)().eval()
    cost = onnx_cost(export_onnx(module, [1, 28, 28], tmp_path / "m.onnx"), [1, 28, 28])
    # The same Conv/Linear MACs counted on the module with forward hooks...
    assert cost.macs == torch_cost(module, [1, 28, 28])["macs"]
    # ...and close to Torch-Pruning's count, which also charges normalisation, activations and pooling.
    tp_macs, tp_params = tp.utils.count_ops_and_params(module, torch.zeros(1, 1, 28, 28))
    assert cost.macs <= tp_macs <= 1.1 * cost.macs
    # Batch norm folds into the convolutions on export: fewer parameters, never more.
    assert 0.95 * tp_params <= cost.params <= tp_params


def test_a_text_model_that_trims_its_padding_counts_the_macs_of_its_full_length(tmp_path: Path) -> None:
    """The trimmed length is decided by the data, so ONNX's shape inference cannot know it: every matrix
    product behind it went uncounted (0 MACs for the trimmed MiniLM candidates)."""
    from squeezeflow.models.sources import export_onnx
    from squeezeflow.passes import ModelState, PassContext, get_pass
    from squeezeflow.zoo.minilm import minilm_classifier

    model = minilm_classifier(
        num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64, vocab_size=500
    ).eval()
    x = np.zeros((8, 16), dtype=np.int64)
    x[:, :5] = 7
    y = np.array([0, 1] * 4)
    ctx = PassContext(workdir=tmp_path, input_shape=[16], train_x=x, train_y=y, val_x=x, val_y=y)
    trim = get_pass("trim_padding")
    trimmed = trim().run(ModelState(torch_module=model), trim.Config.model_validate({}), ctx).torch_module
    full = onnx_cost(export_onnx(model, [16], tmp_path / "f.onnx", dtype=np.int64), [16])
    cost = onnx_cost(export_onnx(trimmed, [16], tmp_path / "t.onnx", dtype=np.int64), [16])
    assert full.unresolved == 0 and full.macs > 0
    assert cost.unresolved == 0 and cost.macs == full.macs
