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
    from onnx import helper

    model = onnx.load(str(src))
    if not has_prediction_heads(model):
        graph = model.graph
        _free_head_names(graph)
        any_rank = _batch_a_single_sample(graph)
        _add_output_heads(graph, labels)
        if not any(o.domain == _ML_DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(_ML_DOMAIN, _ML_OPSET))
        # Checked with the input's rank declared: ONNX's checker wants one on a graph input, while the
        # ONNX IR and ONNX Runtime read a tensor type without a shape as "any rank", which is what lets
        # the graph take one sample as well as a batch.
        onnx.checker.check_model(model)
        if any_rank is not None:
            any_rank.type.tensor_type.ClearField("shape")
    onnx.save(model, str(dst))
    return dst


def _free_head_names(graph: Any) -> None:
    """Rename the model's own tensors called ``scores`` or ``label`` (or ``logits``, where that is not
    its first output) so the heads' outputs can have those names: a graph names each tensor once."""
    taken = {LOGITS, SCORES, LABEL} - {graph.output[0].name}
    used = {
        *(i.name for i in graph.input),
        *(t.name for t in graph.initializer),
        *(o for n in graph.node for o in n.output),
    }
    renamed: dict[str, str] = {}
    for name in sorted(taken & used):
        new = f"{name}.model"
        while new in used:
            new += "_"
        renamed[name] = new
        used.add(new)
    if not renamed:
        return
    for n in graph.node:
        n.input[:] = [renamed.get(i, i) for i in n.input]
        n.output[:] = [renamed.get(o, o) for o in n.output]
    for v in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        v.name = renamed.get(v.name, v.name)


def _batch_a_single_sample(graph: Any) -> Any | None:
    """Put Reshape(x, concat([-1], shape(x)[-rank:])) in front of the graph's only input: it adds the
    batch dimension to one sample and leaves a batch as it is. Returns that input (whose rank the caller
    then clears), or None where the graph has several inputs, or one of unknown rank or passed through."""
    import onnx
    from onnx import TensorProto, helper

    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or not inputs[0].type.tensor_type.HasField("shape"):
        return None
    first = inputs[0]
    rank = len(first.type.tensor_type.shape.dim) - 1
    if rank < 1 or any(o.name == first.name for o in graph.output):
        return None
    for n in graph.node:
        n.input[:] = [_BATCHED if i == first.name else i for i in n.input]
    batched = onnx.ValueInfoProto()
    batched.CopyFrom(first)
    batched.name = _BATCHED
    graph.value_info.append(batched)  # the input's own type, for without_prediction_heads
    p = _PREFIX
    front = [
        helper.make_node("Shape", [first.name], [p + "shape"], name=p + "shape"),
        helper.make_node(
            "Slice", [p + "shape", p + "minus_rank", p + "end"], [p + "sample_shape"], name=p + "sample_shape"
        ),
        helper.make_node(
            "Concat", [p + "minus_one", p + "sample_shape"], [p + "target_shape"], axis=0, name=p + "target"
        ),
        helper.make_node("Reshape", [first.name, p + "target_shape"], [_BATCHED], name=p + "batch"),
    ]
    graph.initializer.extend(
        [
            helper.make_tensor(p + "minus_rank", TensorProto.INT64, [1], [-rank]),
            helper.make_tensor(p + "end", TensorProto.INT64, [1], [2**62]),
            helper.make_tensor(p + "minus_one", TensorProto.INT64, [1], [-1]),
        ]
    )
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend([*front, *body])  # nodes stay in topological order
    return first


def _add_output_heads(graph: Any, labels: Sequence[str]) -> None:
    """Outputs ``logits`` (the first output, renamed through an Identity where needed), ``scores``
    (Softmax) and ``label`` (ArgMax, then LabelEncoder to ``labels``), then the graph's other outputs."""
    import onnx
    from onnx import TensorProto, helper

    p = _PREFIX
    first, *rest = graph.output
    logits = onnx.ValueInfoProto()
    logits.CopyFrom(first)
    if first.name != LOGITS:
        logits.name = LOGITS
        graph.node.append(helper.make_node("Identity", [first.name], [LOGITS], name=p + "logits"))
    graph.node.extend(
        [
            helper.make_node("Softmax", [LOGITS], [SCORES], axis=-1, name=p + "scores"),
            helper.make_node("ArgMax", [LOGITS], [p + "class_index"], axis=-1, keepdims=0, name=p + "argmax"),
            helper.make_node(
                "LabelEncoder",
                [p + "class_index"],
                [LABEL],
                domain=_ML_DOMAIN,
                keys_int64s=list(range(len(labels))),
                values_strings=list(labels),
                default_string="",
                name=p + "label",
            ),
        ]
    )
    scores_type = logits.type.tensor_type.elem_type or TensorProto.FLOAT
    del graph.output[:]
    graph.output.extend(
        [
            logits,
            helper.make_tensor_value_info(SCORES, scores_type, ["batch", len(labels)]),
            helper.make_tensor_value_info(LABEL, TensorProto.STRING, ["batch"]),
            *rest,
        ]
    )


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
