"""Running ONNX models in ONNX Runtime: sessions with explicit threads, batched prediction (dynamic int8
one sample at a time), and counting a graph's parameters and MACs.

Kept apart from `squeezeflow.models.sources` (loading and exporting model sources, which needs the job spec's
types): the optimization passes run models too, and the spec validates recipes against the passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from squeezeflow.errors import ModelLoadError
from squeezeflow.onnx_heads import LOGITS


def session(
    path: Path,
    intra_op_threads: int = 2,
    inter_op_threads: int = 1,
    provider: str = "CPUExecutionProvider",
) -> Any:
    """An ONNX Runtime session on ``provider`` (ONNX Runtime adds its CPU provider for the nodes
    ``provider`` cannot run) with explicit thread counts. Callers that must not run elsewhere check
    ``get_providers()`` of the result."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=[provider])
    except Exception as err:
        raise ModelLoadError(f"ONNX Runtime cannot load {path.name}: {str(err)[:300]}") from None


_ORT_TYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


# Nodes whose output for one sample depends on the other samples of its batch: ONNX Runtime's dynamic
# quantization computes the activations' int8 range over the whole input tensor.
BATCH_DEPENDENT_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"})


def batch_dependent(path: Path) -> bool:
    """Whether the model's answer for a sample depends on what it is batched with."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(n.op_type in BATCH_DEPENDENT_OPS for n in graph.node)


def predict_logits(
    path: Path,
    x: np.ndarray,
    batch_size: int | None = None,
    threads: int = 2,
    provider: str = "CPUExecutionProvider",
) -> np.ndarray:
    """Run the ONNX model over ``x`` in batches and return its logits: its first output,
    or the one named ``logits`` where the graph has prediction heads.

    ``batch_size`` defaults to 256, and to 1 for a model whose answers depend on their batch
    (dynamic int8, see ``batch_dependent``): it is then evaluated as it runs at batch 1, one sample at
    a time: in a batch of 256 one int8 range would cover every sample's activations at once."""
    if batch_size is None:
        batch_size = 1 if batch_dependent(path) else 256
    sess = session(path, intra_op_threads=threads, provider=provider)
    first = sess.get_inputs()[0]
    name = first.name
    want = _ORT_TYPES.get(first.type)
    if want is not None and x.dtype != want:
        if np.issubdtype(want, np.integer) != np.issubdtype(x.dtype, np.integer):
            raise ModelLoadError(
                f"{path.name} takes {first.type} input but the data is {x.dtype} "
                "(token-id models need int64 x, other models float32)"
            )
        x = x.astype(want)
    order = None
    if np.issubdtype(x.dtype, np.integer) and x.ndim == 2 and len(x) > batch_size:
        # Token ids: batch rows of similar length together, so a model that trims padding at run time
        # (see passes/text.py) computes each batch at its own length. Rows are independent, so the
        # answers are the same in any order; they are put back in the caller's order.
        from squeezeflow.training import token_lengths

        order = np.argsort(token_lengths(x), kind="stable")
        x = x[order]
    # The logits by name where the graph has prediction heads (squeezeflow.onnx_heads) after them.
    names = [o.name for o in sess.get_outputs()]
    wanted = [LOGITS] if LOGITS in names else names[:1]
    outs = [sess.run(wanted, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    logits = np.concatenate(outs, axis=0)
    if order is not None:
        restored = np.empty_like(logits)
        restored[order] = logits
        logits = restored
    return logits


def count_params(path: Path) -> int:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return int(sum(numpy_helper.to_array(t).size for t in model.graph.initializer))


def count_macs(path: Path, input_shape: list[int]) -> int:
    """Multiply-accumulates for one sample (float and 8-bit integer together); the counting rules are
    in `squeezeflow.onnx_cost`."""
    from squeezeflow.onnx_cost import onnx_cost

    return onnx_cost(path, input_shape).macs
