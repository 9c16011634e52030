"""Prediction heads on a classifier's ONNX graph, so that the file squeezeflow gates, benchmarks and
promotes answers a user in their words: ``label`` (the class name), ``scores`` (softmax probabilities)
and ``logits``, for one sample or a batch.

The heads are plain ONNX operators (Softmax, ArgMax, ``ai.onnx.ml`` LabelEncoder) added to the graph
itself: the MLflow ``onnx`` flavor serves them with no custom code and nothing pickled. A leading
Reshape to ``[-1, *sample_shape]`` (the sample shape read from the input at run time) lets the graph
take one sample without its batch dimension as well as a batch; the graph input then declares its
element type but no rank. ``without_prediction_heads`` gives back the graph as the model computed it,
for the optimization passes, which work on the bare classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

LOGITS = "logits"
SCORES = "scores"
LABEL = "label"
_PREFIX = "squeezeflow_head/"
_BATCHED = _PREFIX + "batched_input"
_ML_DOMAIN = "ai.onnx.ml"
# LabelEncoder with keys_int64s/values_strings exists from ai.onnx.ml opset 2; ONNX Runtime runs it.
_ML_OPSET = 2


def class_labels(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """The dataset's class names, or each class's index as a string where it gives none."""
    if class_names:
        return [str(n) for n in class_names]
    return [str(i) for i in range(num_classes)]


def has_prediction_heads(model: Any) -> bool:
    return any(n.name.startswith(_PREFIX) for n in model.graph.node)


def with_prediction_heads(src: Path, dst: Path, labels: Sequence[str]) -> Path:
    """Write ``src`` with the prediction heads to ``dst`` (returned); ``src``'s first output is the
    logits, one score per class of ``labels``. A graph that has them already is copied as it is."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(src))
    if has_prediction_heads(model):
        onnx.save(model, str(dst))
        return dst
    graph = model.graph
    nodes: list[Any] = []
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]

    # One sample or a batch: Reshape(x, concat([-1], shape(x)[-rank:])) adds the batch dimension to a
    # sample and leaves a batch as it is. Only for a single input of known rank.
    if len(inputs) == 1 and inputs[0].type.tensor_type.HasField("shape"):
        first = inputs[0]
        rank = len(first.type.tensor_type.shape.dim) - 1
        if rank >= 1:
            for n in graph.node:
                n.input[:] = [_BATCHED if i == first.name else i for i in n.input]
            for o in graph.output:
                if o.name == first.name:  # an input passed straight through: leave the graph alone
                    raise ValueError(f"{src.name}: its input {first.name!r} is also an output")
            batched = onnx.ValueInfoProto()
            batched.CopyFrom(first)
            batched.name = _BATCHED
            graph.value_info.append(batched)  # the original input's type, kept for without_prediction_heads
            nodes += [
                helper.make_node("Shape", [first.name], [_PREFIX + "shape"], name=_PREFIX + "shape"),
                helper.make_node(
                    "Slice",
                    [_PREFIX + "shape", _PREFIX + "minus_rank", _PREFIX + "end"],
                    [_PREFIX + "sample_shape"],
                    name=_PREFIX + "sample_shape",
                ),
                helper.make_node(
                    "Concat",
                    [_PREFIX + "minus_one", _PREFIX + "sample_shape"],
                    [_PREFIX + "target_shape"],
                    axis=0,
                    name=_PREFIX + "target_shape",
                ),
                helper.make_node(
                    "Reshape", [first.name, _PREFIX + "target_shape"], [_BATCHED], name=_PREFIX + "batch"
                ),
            ]
            graph.initializer.extend(
                [
                    helper.make_tensor(_PREFIX + "minus_rank", TensorProto.INT64, [1], [-rank]),
                    helper.make_tensor(_PREFIX + "end", TensorProto.INT64, [1], [2**62]),
                    helper.make_tensor(_PREFIX + "minus_one", TensorProto.INT64, [1], [-1]),
                ]
            )

    first_out = graph.output[0]
    rest = list(graph.output[1:])
    logits = onnx.ValueInfoProto()
    logits.CopyFrom(first_out)
    if first_out.name != LOGITS:
        logits.name = LOGITS
        nodes.append(helper.make_node("Identity", [first_out.name], [LOGITS], name=_PREFIX + "logits"))
    index = _PREFIX + "class_index"
    # The Reshape must run before the model's nodes: nodes are kept in topological order.
    head_front = [n for n in nodes if n.op_type in ("Shape", "Slice", "Concat", "Reshape")]
    body = [n for n in graph.node if not n.name.startswith(_PREFIX)]
    tail = [n for n in nodes if n not in head_front]
    tail += [
        helper.make_node("Softmax", [LOGITS], [SCORES], axis=-1, name=_PREFIX + "scores"),
        helper.make_node("ArgMax", [LOGITS], [index], axis=-1, keepdims=0, name=_PREFIX + "argmax"),
        helper.make_node(
            "LabelEncoder",
            [index],
            [LABEL],
            domain=_ML_DOMAIN,
            keys_int64s=list(range(len(labels))),
            values_strings=list(labels),
            default_string="",
            name=_PREFIX + "label",
        ),
    ]
    del graph.node[:]
    graph.node.extend([*head_front, *body, *tail])
    del graph.output[:]
    graph.output.extend(
        [
            logits,
            helper.make_tensor_value_info(SCORES, TensorProto.FLOAT, ["batch", len(labels)]),
            helper.make_tensor_value_info(LABEL, TensorProto.STRING, ["batch"]),
            *rest,
        ]
    )
    if not any(o.domain == _ML_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(_ML_DOMAIN, _ML_OPSET))
    if len(nodes) >= 4:
        # Checked with the input's rank declared: ONNX's checker wants one on a graph input, while the
        # ONNX IR and ONNX Runtime take a tensor type without a shape as "any rank", which is what
        # lets the graph take one sample as well as a batch.
        onnx.checker.check_model(model)
        next(i for i in graph.input if i.name == nodes[0].input[0]).type.tensor_type.ClearField("shape")
    else:
        onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def without_prediction_heads(src: Path, dst: Path) -> Path:
    """``src`` as the classifier computed it, before ``with_prediction_heads``: its own input (with its
    rank) and its logits as the only output besides its others. ``src`` itself where it has no heads."""
    import onnx

    model = onnx.load(str(src))
    if not has_prediction_heads(model):
        return src
    graph = model.graph
    heads = [n for n in graph.node if n.name.startswith(_PREFIX)]
    renamed: dict[str, str] = {}
    for n in heads:
        if n.op_type == "Identity" and n.output[0] == LOGITS:
            renamed[LOGITS] = n.input[0]
    kept = [n for n in graph.node if not n.name.startswith(_PREFIX)]
    batched = next((v for v in graph.value_info if v.name == _BATCHED), None)
    if batched is not None:
        first = next(
            i for i in graph.input if any(n.input[0] == i.name for n in heads if n.op_type == "Shape")
        )
        for n in kept:
            n.input[:] = [first.name if i == _BATCHED else i for i in n.input]
        first.type.CopyFrom(batched.type)
        graph.value_info.remove(batched)
    initializers = [t for t in graph.initializer if not t.name.startswith(_PREFIX)]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.node[:]
    graph.node.extend(kept)
    outputs = [o for o in graph.output if o.name not in (SCORES, LABEL)]
    for o in outputs:
        o.name = renamed.get(o.name, o.name)
    del graph.output[:]
    graph.output.extend(outputs)
    if not any(n.domain == _ML_DOMAIN for n in kept):
        ops = [o for o in model.opset_import if o.domain != _ML_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(ops)
    onnx.save(model, str(dst))
    return dst


def takes_any_rank(path: Path) -> bool:
    """Whether the graph's first input takes one sample as well as a batch (declares no rank)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return bool(graph.input) and not graph.input[0].type.tensor_type.HasField("shape")


def served_outputs(path: Path, x: Any) -> dict[str, Any]:
    """Every named output of the graph on ``x``, as the MLflow ``onnx`` flavor returns them."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {sess.get_inputs()[0].name: x}), strict=True))
