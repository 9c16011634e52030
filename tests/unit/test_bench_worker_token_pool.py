"""The benchmark worker times token-id models over a seeded pool of batches of different real lengths
(so a model that trims padding at run time is measured over a length distribution, not at one length);
float inputs stay one fixed array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from squeezeflow.devices.worker import TOKEN_POOL_SIZE, _onnx_runner, token_id_pool, token_ids


def _lengths(batch: np.ndarray) -> np.ndarray:
    return (batch != 0).sum(axis=-1)


def test_the_token_id_pool_spreads_real_lengths_and_is_reproducible() -> None:
    pool = token_id_pool((1, 64), 30_522, np.int64)
    assert len(pool) == TOKEN_POOL_SIZE
    lengths = np.concatenate([_lengths(b) for b in pool])
    assert len(set(lengths.tolist())) > TOKEN_POOL_SIZE // 4  # many distinct lengths, not one
    assert lengths.min() >= 64 // 4 and lengths.max() <= 64
    for b in pool:
        assert b.shape == (1, 64) and b.dtype == np.int64
        assert b.min() >= 0 and b.max() < 30_522 and (b[:, 0] > 0).all()
    again = token_id_pool((1, 64), 30_522, np.int64)
    assert all(np.array_equal(a, b) for a, b in zip(pool, again, strict=True))
    np.testing.assert_array_equal(pool[0], token_ids((1, 64), 30_522, np.int64))
    assert token_id_pool((2, 8), None, np.int32)[3].dtype == np.int32


def _token_model(path: Path) -> Path:
    """ids [batch, 16] -> embedding lookup -> sum: its output follows the ids, so each feed shows."""
    table = numpy_helper.from_array(np.random.default_rng(0).random((100, 4), dtype=np.float32), "emb")
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["emb", "ids"], ["e"]),
            helper.make_node("ReduceSum", ["e"], ["out"], keepdims=0),
        ],
        "tok",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [])],
        [table],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def _float_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["out"], keepdims=0)],
        "flt",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def _req(model: Path, shape: list[int]) -> dict:
    return {"model": str(model), "input_shape": shape, "intra_op_threads": 1, "inter_op_threads": 1}


def test_token_id_runs_cycle_through_the_pool_and_float_runs_repeat_one_input(tmp_path: Path) -> None:
    make_run, _ = _onnx_runner(_req(_token_model(tmp_path / "tok.onnx"), [16]), "test")
    run = make_run(1)
    outs = [float(run()[0]) for _ in range(2 * TOKEN_POOL_SIZE)]
    assert len(set(outs[:TOKEN_POOL_SIZE])) > 1  # different inputs run after run
    assert outs[:TOKEN_POOL_SIZE] == outs[TOKEN_POOL_SIZE:]  # the same pool, in order, again
    assert make_run(1)()[0] == outs[0]  # a fresh runner starts at the pool's first batch

    make_run, _ = _onnx_runner(_req(_float_model(tmp_path / "lin.onnx"), [4]), "test")
    run = make_run(2)
    first = run()[0]
    for _ in range(5):
        np.testing.assert_array_equal(run()[0], first)
