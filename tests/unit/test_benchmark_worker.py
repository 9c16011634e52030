"""The benchmark worker measures in rounds until the round medians agree, and reports how well they did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from squeezeflow.bench_worker import measure


def linear_model(path: Path) -> Path:
    w = numpy_helper.from_array(np.random.default_rng(0).random((16, 10), dtype=np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        ],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_worker_reports_ordered_percentiles_and_round_stability(tmp_path: Path) -> None:
    req = {
        "model": str(linear_model(tmp_path / "m.onnx")),
        "input_shape": [1, 4, 4],
        "intra_op_threads": 1,
        "inter_op_threads": 1,
        "batch_size": 4,
        "warmup": 5,
        "iterations": 50,
        "pin_cpus": False,
    }
    m = measure(req)
    assert 2 <= m["rounds"] <= 5
    assert m["iterations"] == 50 * m["rounds"]
    assert 0 < m["p50_ms"] <= m["p90_ms"] <= m["p95_ms"] <= m["p99_ms"]
    assert 0.0 <= m["cv_p50"] < 10
    assert m["throughput_per_s"] > 0


def test_worker_stops_after_max_rounds_when_medians_never_agree(tmp_path: Path) -> None:
    req = {
        "model": str(linear_model(tmp_path / "m.onnx")),
        "input_shape": [1, 4, 4],
        "intra_op_threads": 1,
        "inter_op_threads": 1,
        "batch_size": 1,
        "warmup": 0,
        "iterations": 10,
        "pin_cpus": False,
        "target_cv": 0.0,
        "max_rounds": 3,
    }
    assert measure(req)["rounds"] == 3
