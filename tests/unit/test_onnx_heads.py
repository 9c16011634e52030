"""Prediction heads on a classifier's ONNX graph: what the promoted model answers a user."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from squeezeflow.models.sources import check_onnx
from squeezeflow.onnx_heads import class_labels, with_prediction_heads, without_prediction_heads
from squeezeflow.runtime import predict_logits


def _export(tmp_path: Path, output_name: str) -> Path:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
    path = tmp_path / "bare.onnx"
    torch.onnx.export(
        m,
        (torch.zeros(2, 3, 4),),
        str(path),
        input_names=["pixels"],
        output_names=[output_name],
        dynamic_axes={"pixels": {0: "batch"}, output_name: {0: "batch"}},
        dynamo=False,
    )
    return path


def test_heads_answer_class_names_scores_and_logits_for_a_sample_or_a_batch_whatever_the_output_name(
    tmp_path: Path,
) -> None:
    bare = _export(tmp_path, "out")
    served = with_prediction_heads(bare, tmp_path / "served.onnx", ["cat", "dog", "owl"])
    x = np.random.default_rng(0).random((5, 3, 4), dtype=np.float32)
    sess = ort.InferenceSession(str(served), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["logits", "scores", "label"]
    logits, scores, label = sess.run(None, {"pixels": x})
    np.testing.assert_allclose(logits, predict_logits(bare, x), atol=1e-6)
    np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-6)
    assert list(label) == [["cat", "dog", "owl"][i] for i in logits.argmax(1)]
    one = sess.run(None, {"pixels": x[2]})
    assert one[0].shape == (1, 3) and list(one[2]) == [label[2]]
    # adding them twice changes nothing; taking them off gives the classifier back, rank included
    again = with_prediction_heads(served, tmp_path / "again.onnx", ["cat", "dog", "owl"])
    assert again.read_bytes() == served.read_bytes()
    back = without_prediction_heads(served, tmp_path / "back.onnx")
    check_onnx(back, "the classifier")  # ONNX's checker wants the input's rank declared
    bare_sess = ort.InferenceSession(str(back), providers=["CPUExecutionProvider"])
    assert [o.name for o in bare_sess.get_outputs()] == ["out"]
    assert len(bare_sess.get_inputs()[0].shape) == 3
    np.testing.assert_allclose(bare_sess.run(None, {"pixels": x})[0], logits, atol=1e-6)


def test_a_dataset_without_class_names_labels_each_class_by_its_index() -> None:
    assert class_labels(None, 3) == ["0", "1", "2"]
    assert class_labels(["a", "b"], 2) == ["a", "b"]


def test_heads_take_their_names_from_a_graph_that_uses_them_for_its_own_tensors(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "label")  # an initializer named label
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "label"], ["scores"]),
            helper.make_node("Relu", ["scores"], ["out"]),
        ],
        "clash",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3])],
        [w],
    )
    bare = tmp_path / "clash.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(bare))
    served = with_prediction_heads(bare, tmp_path / "served.onnx", ["a", "b", "c"])
    x = np.array([[0.0, 2.0, -1.0, 5.0]], np.float32)
    logits, scores, label = ort.InferenceSession(str(served), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )
    np.testing.assert_allclose(logits, [[0.0, 2.0, 0.0]])
    assert list(label) == ["b"] and scores.shape == (1, 3)
