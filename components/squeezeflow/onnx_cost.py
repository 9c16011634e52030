"""Parameters, multiply-accumulates (MACs) and weight bytes of an ONNX model, counted from its graph.

What is counted, for one sample (the first input's batch dimension set to 1, shapes from ONNX shape
inference; where it leaves a compute node's shapes unknown, as in the shape arithmetic of a
transformers attention mask or a length the data decides, from one sample run through ONNX Runtime:
zeros, or token ids without padding, so a model that trims its padding counts its full length):

* MACs of ``Conv``, ``ConvInteger``, ``QLinearConv``, ``Gemm``, ``MatMul``, ``MatMulInteger`` and
  ``QLinearMatMul`` (and ONNX Runtime's ``com.microsoft`` ``QGemm``, ``DynamicQuantizeMatMul``,
  ``MatMulIntegerToFloat``, ``FusedConv`` and ``FusedMatMul``, which its quantizer and optimizer write).
  A convolution is output elements x weight elements per output channel (groups included); a matrix
  product is output elements x the reduced dimension.
* Which of those MACs are 8-bit integer arithmetic: the integer ops above, and a float ``Conv``,
  ``MatMul`` or ``Gemm`` whose data and weight inputs both come from ``DequantizeLinear`` of an 8-bit
  (or narrower) integer tensor: the QDQ form that ONNX Runtime executes as an integer kernel.
  Every other counted MAC is float.
* Parameters: elements of the initializers (and ``Constant`` tensors) that are weights or biases;
  quantization scales and zero points and int64 shape constants are not parameters.
* Weight bytes: the bytes of every initializer and ``Constant`` tensor, what an inference reads.

Not counted, by design: element-wise ops, normalisation, pooling, activations, resizing (their cost is
memory traffic, not MACs). Not counted, and listed in ``OnnxCost.uncounted`` when present because they
do carry MACs: ``ConvTranspose``, ``Einsum``, ``LSTM``/``GRU``/``RNN``, ``Attention`` and
``MultiHeadAttention``. A node whose shapes inference cannot resolve is skipped and counted in
``OnnxCost.unresolved``.

Why by hand: the energy estimate needs the MACs split by arithmetic precision, and the ONNX profilers
found on PyPI (onnx-tool, onnx-opcounter, onnxprofile) report one MAC total per node type without
telling a QDQ-fed ``Conv`` from a float one, and some do not know ONNX Runtime's contrib ops; torch-side
counters cannot see what ships. The rules above are short, and the tests check them on float, static
QDQ and dynamic int8 graphs and against Torch-Pruning's count on the float baseline.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_CONV = {"Conv", "FusedConv"}
_MATMUL = {"MatMul", "FusedMatMul"}
_INT_CONV = {"ConvInteger", "QLinearConv"}
_INT_MATMUL = {"MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
_COMPUTED = {*_CONV, *_MATMUL, *_INT_CONV, *_INT_MATMUL, "Gemm", "QGemm"}
_UNCOUNTED = {"ConvTranspose", "Einsum", "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention"}

# Input positions that hold quantization scales and zero points (never parameters), by op type.
_QUANT_PARAM_INPUTS: dict[str, tuple[int, ...]] = {
    "QuantizeLinear": (1, 2),
    "DequantizeLinear": (1, 2),
    "QLinearConv": (1, 2, 4, 5, 6, 7),
    "QLinearMatMul": (1, 2, 4, 5, 6, 7),
    "ConvInteger": (2, 3),
    "MatMulInteger": (2, 3),
    "DynamicQuantizeMatMul": (2, 3),
    "MatMulIntegerToFloat": (2, 3, 4, 5),
    "QGemm": (1, 2, 4, 5, 7, 8),
}


@dataclass(frozen=True)
class OnnxCost:
    """What one sample costs in an ONNX model (see the module docstring for the counting rules)."""

    params: int
    macs: int
    int8_macs: int
    weight_bytes: int
    uncounted: dict[str, int] = field(default_factory=dict)
    unresolved: int = 0

    @property
    def float_macs(self) -> int:
        return self.macs - self.int8_macs


def _dims(vi: Any) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else 0 for d in vi.type.tensor_type.shape.dim]


def _known(shape: list[int] | None) -> bool:
    return shape is not None and all(d > 0 for d in shape)


def _fix_one_sample(model: Any, input_shape: list[int]) -> bool:
    """Give the first input the shape of one batched sample; True where it declared no rank (an input
    of any rank, see squeezeflow.onnx_heads)."""
    if not model.graph.input:
        return False
    dims = model.graph.input[0].type.tensor_type.shape.dim
    any_rank = not dims
    if any_rank:
        for _ in range(len(input_shape) + 1):
            dims.add()
    for d, v in zip(dims, [1, *input_shape], strict=False):
        d.ClearField("dim_param")
        d.dim_value = v
    return any_rank


def _count_macs(
    nodes: Any, shapes: dict[str, list[int]], dequantized_int8: Callable[[str], bool]
) -> tuple[int, int, int, Counter[str]]:
    """MACs, 8-bit integer MACs, compute nodes with unknown shapes and uncounted ops with MACs."""
    macs = int8 = unresolved = 0
    uncounted: Counter[str] = Counter()
    for node in nodes:
        op, ins = node.op_type, list(node.input)
        out = shapes.get(node.output[0]) if node.output else None
        n: int | None = None
        is_int8 = False
        if op in _CONV or op in _INT_CONV:
            w = shapes.get(ins[3] if op == "QLinearConv" else ins[1])
            if _known(out) and _known(w) and w is not None and out is not None:
                n = int(np.prod(out)) * int(np.prod(w[1:]))
            is_int8 = op in _INT_CONV or (dequantized_int8(ins[0]) and dequantized_int8(ins[1]))
        elif op in _MATMUL or op in _INT_MATMUL:
            a = shapes.get(ins[0])
            if _known(out) and _known(a) and a is not None and out is not None:
                n = int(np.prod(out)) * int(a[-1])
            is_int8 = op in _INT_MATMUL or (dequantized_int8(ins[0]) and dequantized_int8(ins[1]))
        elif op in ("Gemm", "QGemm"):
            a = shapes.get(ins[0])
            trans_a = next((a_.i for a_ in node.attribute if a_.name == "transA"), 0)
            if _known(out) and _known(a) and a is not None and out is not None and len(a) == 2:
                n = int(np.prod(out)) * int(a[0] if trans_a else a[1])
            b = ins[3] if op == "QGemm" else ins[1]
            is_int8 = op == "QGemm" or (dequantized_int8(ins[0]) and dequantized_int8(b))
        elif op in _UNCOUNTED:
            uncounted[op] += 1
            continue
        else:
            continue
        if n is None:
            unresolved += 1
            continue
        macs += n
        if is_int8:
            int8 += n
    return macs, int8, unresolved, uncounted


# What fills an integer input for the run that measures shapes: a token id that is no common
# vocabulary's pad id (BERT's is 0, RoBERTa's 1), so a text model sees a sample without padding.
_TOKEN_ID = 2


def _run_shapes(model: Any, names: set[str], path: Path | str) -> dict[str, list[int]]:
    """The shapes of the tensors ``names`` when ONNX Runtime runs ``model`` (its input already fixed to
    one sample) on one sample: zeros, or for integer token ids a sequence without padding, the longest
    case for a model that trims its padding. Empty where the model has several inputs or the run
    fails."""
    import onnx
    import onnxruntime as ort

    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1 or not _known(_dims(inputs[0])):
        return {}
    run = onnx.ModelProto()
    run.CopyFrom(model)
    del run.graph.value_info[:]
    wanted = sorted(names)
    outputs = {o.name for o in run.graph.output}
    run.graph.output.extend(onnx.ValueInfoProto(name=n) for n in wanted if n not in outputs)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(inputs[0].type.tensor_type.elem_type)
    fill = _TOKEN_ID if np.issubdtype(dtype, np.integer) else 0
    sample = np.full(_dims(inputs[0]), fill, dtype=dtype)
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(run.SerializeToString(), options, providers=["CPUExecutionProvider"])
        outs = session.run(wanted, {inputs[0].name: sample})
    except Exception as err:  # a graph ONNX Runtime cannot run on this sample: count what is known
        log.debug("measuring shapes of %s in ONNX Runtime failed: %s", path, err)
        return {}
    return {name: list(np.shape(v)) for name, v in zip(wanted, outs, strict=True)}


def onnx_cost(path: Path | str, input_shape: list[int]) -> OnnxCost:
    """Count ``path``'s parameters, MACs (and the 8-bit integer share) and weight bytes for one sample
    of shape ``input_shape`` (no batch dimension)."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(path))
    any_rank = _fix_one_sample(model, input_shape)
    try:
        # data_prop: the heads' Reshape takes its target shape from the input's, computed in the graph.
        model = onnx.shape_inference.infer_shapes(model, data_prop=any_rank)
    except Exception as err:  # exotic graphs: count what has shapes already
        log.warning(
            "ONNX shape inference failed on %s (%s); MACs are counted where shapes are known", path, err
        )

    graph = model.graph
    shapes: dict[str, list[int]] = {}
    dtypes: dict[str, int] = {}
    for vi in [*graph.value_info, *graph.output, *graph.input]:
        shapes[vi.name] = _dims(vi)
        dtypes[vi.name] = vi.type.tensor_type.elem_type
    tensors: dict[str, Any] = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
            if value is not None:
                tensors[node.output[0]] = value
    for name, t in tensors.items():
        shapes[name] = list(t.dims)
        dtypes[name] = t.data_type

    narrow = {TensorProto.INT8, TensorProto.UINT8, TensorProto.INT4, TensorProto.UINT4}
    producer = {out: node for node in graph.node for out in node.output}

    def dequantized_int8(name: str) -> bool:
        node = producer.get(name)
        return node is not None and node.op_type == "DequantizeLinear" and dtypes.get(node.input[0]) in narrow

    quant_params = {
        node.input[i]
        for node in graph.node
        for i in _QUANT_PARAM_INPUTS.get(node.op_type, ())
        if i < len(node.input) and node.input[i]
    }

    macs, int8, unresolved, uncounted = _count_macs(graph.node, shapes, dequantized_int8)
    if unresolved:
        # ONNX's inference leaves shapes computed in the graph unknown where it cannot propagate values
        # (a transformers attention mask built with Range over the batch) or where they depend on the
        # data (the trimmed padding's length): one sample run through ONNX Runtime tells them.
        unknown = {
            name
            for node in graph.node
            if node.op_type in _COMPUTED
            for name in node.output[:1] + node.input[:1]
            if not _known(shapes.get(name))
        }
        measured = _run_shapes(model, unknown, path)
        if measured:
            shapes = {**shapes, **measured}
            macs, int8, unresolved, uncounted = _count_macs(graph.node, shapes, dequantized_int8)

    params = weight_bytes = 0
    for name, t in tensors.items():
        arr = numpy_helper.to_array(t)
        weight_bytes += int(arr.nbytes)
        if name not in quant_params and t.data_type != TensorProto.INT64:
            params += int(arr.size)
    if unresolved:
        log.warning(
            "%s: %d compute nodes have shapes inference could not resolve; not counted", path, unresolved
        )
    return OnnxCost(
        params=params,
        macs=macs,
        int8_macs=int8,
        weight_bytes=weight_bytes,
        uncounted=dict(uncounted),
        unresolved=unresolved,
    )
