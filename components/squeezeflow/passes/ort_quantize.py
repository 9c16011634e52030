"""ONNX Runtime post-training int8 quantization: dynamic and static (QDQ).

Whether int8 is faster than float depends on the CPU and on these settings (signed vs unsigned
activations decide whether ORT's fast u8s8 kernels are used), so they are parameters the search
varies and the benchmark measures, never assumptions.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from squeezeflow.errors import PassError
from squeezeflow.library_output import onnxruntime_quantizer_to_debug_log
from squeezeflow.passes.base import ModelState, OptimizationPass, PassConfig, PassContext, register_pass
from squeezeflow.passes.searchable import Categorical, Domain, ProposedStep, Searchable, SearchedTrial

log = logging.getLogger(__name__)

QType = Literal["qint8", "quint8"]


def _qtype(name: QType) -> Any:
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if name == "qint8" else QuantType.QUInt8


def _preprocess(src: Path, dest: Path) -> Path:
    """ORT's recommended pre-processing (shape inference, graph optimisation); best effort."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dest), skip_symbolic_shape=True)
        return dest
    except Exception as err:
        log.warning("quantization pre-processing skipped (%s); quantizing the model as exported", err)
        return src


def require_onnx(model: ModelState, pass_name: str) -> Path:
    if model.onnx_path is None:
        raise PassError(pass_name, "needs an ONNX model; put torch passes before it in the recipe")
    return model.onnx_path


def _int8_if_offered(domain: Domain) -> list[str]:
    """The opening trials quantize to int8 when the space allows it, whatever order it lists its choices
    in (else its last choice)."""
    if not isinstance(domain, Categorical):
        raise TypeError(f"quantize is searched over a Categorical, not {type(domain).__name__}")
    return ["int8" if "int8" in domain.choices else domain.choices[-1]]


# One searched value chooses among this module's quantizers: what follows pruning and fine-tuning. A
# text (token-id) model gets dynamic int8 for either int8 choice: static int8 collapses a fine-tuned
# transformer's accuracy. Declared by OrtStaticInt8, the image models' int8.
QUANTIZE = Searchable(
    "quantize",
    Categorical(("none", "int8", "int8_accuracy_aware", "int4")),
    order=40,
    description="What follows recovery: nothing, int8, int8 with accuracy-aware float fallback, or (token-id "
    "models) int4 weights for the MatMuls and dynamic int8 for the rest.",
    narrowed_by="quantize",
    opening=_int8_if_offered,
)
_SEARCH_SLOT = 50  # last: ONNX passes follow every torch pass


def _quantize_choice(trial: SearchedTrial) -> str:
    return str(trial.params.get(QUANTIZE.name, "none"))


class DynamicInt8Config(PassConfig):
    weight_type: QType = Field(
        default="qint8", description="Weight type (activations are quantized at run time)."
    )
    per_channel: bool = Field(default=False, description="Per-channel weight scales.")
    op_types: list[str] | None = Field(
        default=None, description="Op types to quantize (default: every op type ORT supports)."
    )


@register_pass
class OrtDynamicInt8(OptimizationPass):
    name = "ort_dynamic_int8"
    description = "ONNX Runtime dynamic quantization: int8 weights, activations quantized at run time."
    input_kind = "onnx"
    Config = DynamicInt8Config
    search_slot = _SEARCH_SLOT

    @classmethod
    def search_steps(cls, trial: SearchedTrial) -> list[ProposedStep]:
        if not trial.token_ids or _quantize_choice(trial) == "none":
            return []
        return [ProposedStep(cls.name, {"per_channel": True}, "int8dyn")]

    def run(self, model: ModelState, config: DynamicInt8Config, ctx: PassContext) -> ModelState:
        from onnxruntime.quantization import quantize_dynamic

        src = require_onnx(model, self.name)
        pre = _preprocess(src, ctx.workdir / "dynamic_pre.onnx")
        out = ctx.workdir / "dynamic_int8.onnx"
        try:
            with onnxruntime_quantizer_to_debug_log(log):
                quantize_dynamic(
                    str(pre),
                    str(out),
                    weight_type=_qtype(config.weight_type),
                    per_channel=config.per_channel,
                    op_types_to_quantize=config.op_types,
                )
        except Exception as err:
            raise PassError(self.name, f"{type(err).__name__}: {str(err)[:300]}") from None
        return ModelState(onnx_path=out)


class StaticInt8Config(PassConfig):
    activation_type: QType = Field(
        default="quint8",
        description="Activation type; quint8 with qint8 weights uses ORT's fast u8s8 kernels.",
    )
    weight_type: QType = Field(default="qint8", description="Weight type.")
    per_channel: bool = Field(default=True, description="Per-channel weight scales.")
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = Field(
        default=256, ge=1, le=100_000, description="Samples from the train split."
    )
    reduce_range: bool = Field(default=False, description="7-bit weights, for CPUs without VNNI.")
    nodes_to_exclude: list[str] = Field(default_factory=list, description="Nodes kept in float.")


class _Reader:
    """ORT CalibrationDataReader over deterministic train-split batches."""

    def __init__(self, input_name: str, ctx: PassContext, samples: int) -> None:
        self.input_name = input_name
        self._it = iter(ctx.calibration_batches(samples))

    def get_next(self) -> dict[str, Any] | None:
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}


def _quantize_static(
    pre: Path, out: Path, config: StaticInt8Config, ctx: PassContext, exclude: list[str]
) -> Path:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        quantize_static,
    )

    input_name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
    reader = _Reader(input_name, ctx, config.calibration_samples)
    CalibrationDataReader.register(_Reader)
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[config.calibration_method]
    # ORT's histogram calibrators (entropy, percentile) print their progress to stdout
    with onnxruntime_quantizer_to_debug_log(log):
        quantize_static(
            str(pre),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            activation_type=_qtype(config.activation_type),
            weight_type=_qtype(config.weight_type),
            calibrate_method=method,
            nodes_to_exclude=[*config.nodes_to_exclude, *exclude] or None,
        )
    return out


@register_pass
class OrtStaticInt8(OptimizationPass):
    name = "ort_static_int8"
    description = "ONNX Runtime static quantization to QDQ int8 with calibration data from the train split."
    input_kind = "onnx"
    Config = StaticInt8Config
    searchable = (QUANTIZE,)
    search_slot = _SEARCH_SLOT

    @classmethod
    def search_steps(cls, trial: SearchedTrial) -> list[ProposedStep]:
        if trial.token_ids or _quantize_choice(trial) != "int8":
            return []
        return [ProposedStep(cls.name, {"activation_type": "quint8", "weight_type": "qint8"}, "int8")]

    def run(self, model: ModelState, config: StaticInt8Config, ctx: PassContext) -> ModelState:
        src = require_onnx(model, self.name)
        pre = _preprocess(src, ctx.workdir / "static_pre.onnx")
        t0 = time.perf_counter()
        try:
            out = _quantize_static(pre, ctx.workdir / "static_int8.onnx", config, ctx, [])
        except Exception as err:
            raise PassError(self.name, f"{type(err).__name__}: {str(err)[:300]}") from None
        log.info("static int8 calibration took %.1fs", time.perf_counter() - t0)
        return ModelState(onnx_path=out)


class AccuracyAwareInt8Config(StaticInt8Config):
    max_fallback_nodes: int = Field(
        default=8, ge=1, le=1000, description="At most this many nodes kept in float."
    )
    sensitivity_nodes: int = Field(
        default=40,
        ge=1,
        le=1000,
        description="Measure the sensitivity of at most this many nodes (largest first).",
    )


def _val_metric(path: Path, ctx: PassContext) -> float:
    import numpy as np

    from squeezeflow.runtime import predict_logits

    logits = predict_logits(path, ctx.val_x, threads=2)
    return float(np.mean(np.argmax(logits, axis=1) == ctx.val_y))


def _weighted_nodes(path: Path) -> list[str]:
    """Conv/Gemm/MatMul nodes, largest weights first (where int8 error and fallback cost matter most)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    sizes = {t.name: int(numpy_helper.to_array(t).size) for t in model.graph.initializer}
    nodes = [
        (max((sizes.get(i, 0) for i in n.input), default=0), n.name)
        for n in model.graph.node
        if n.op_type in ("Conv", "Gemm", "MatMul") and n.name
    ]
    return [name for _, name in sorted(nodes, reverse=True)]


@register_pass
class OrtAccuracyAwareInt8(OptimizationPass):
    """Static int8; when the quantized model loses more validation accuracy than the tolerance
    allows, measure each layer's sensitivity (accuracy regained by keeping it in float) and fall back
    the most sensitive layers to float, one at a time, until it holds or the budget ends (the
    strategy Intel Neural Compressor calls accuracy-aware tuning)."""

    name = "ort_static_int8_accuracy_aware"
    description = (
        "Static QDQ int8 with per-layer sensitivity analysis and float fallback until accuracy holds."
    )
    input_kind = "onnx"
    Config = AccuracyAwareInt8Config
    search_slot = _SEARCH_SLOT

    @classmethod
    def search_steps(cls, trial: SearchedTrial) -> list[ProposedStep]:
        if trial.token_ids or _quantize_choice(trial) != "int8_accuracy_aware":
            return []
        return [ProposedStep(cls.name, {}, "int8aa")]

    def run(self, model: ModelState, config: AccuracyAwareInt8Config, ctx: PassContext) -> ModelState:
        src = require_onnx(model, self.name)
        if ctx.baseline_val_metric is None or ctx.allowed_drop is None:
            raise PassError(self.name, "needs the baseline's validation metric and the tolerance")
        floor = ctx.baseline_val_metric - ctx.allowed_drop
        pre = _preprocess(src, ctx.workdir / "aa_pre.onnx")
        ref = _val_metric(src, ctx)
        try:
            out = _quantize_static(pre, ctx.workdir / "aa_int8.onnx", config, ctx, [])
            acc = _val_metric(out, ctx)
            log.info("int8 validation accuracy %.4f (float %.4f, floor %.4f)", acc, ref, floor)
            history: list[dict[str, object]] = [{"excluded": [], "val_accuracy": acc}]
            if acc >= floor:
                ctx.notes["accuracy_aware"] = {"fallback_nodes": 0, "val_accuracy": acc}
                return ModelState(onnx_path=out)
            gains: list[tuple[float, str]] = []
            for i, node in enumerate(_weighted_nodes(pre)[: config.sensitivity_nodes]):
                trial = _quantize_static(pre, ctx.workdir / f"aa_sens_{i}.onnx", config, ctx, [node])
                gains.append((_val_metric(trial, ctx) - acc, node))
            excluded: list[str] = []
            for gain, node in sorted(gains, reverse=True)[: config.max_fallback_nodes]:
                excluded.append(node)
                out = _quantize_static(
                    pre, ctx.workdir / f"aa_fallback_{len(excluded)}.onnx", config, ctx, excluded
                )
                acc = _val_metric(out, ctx)
                history.append({"excluded": list(excluded), "gain": gain, "val_accuracy": acc})
                log.info("float fallback of %d nodes: validation accuracy %.4f", len(excluded), acc)
                if acc >= floor:
                    ctx.notes["accuracy_aware"] = {"fallback_nodes": len(excluded), "val_accuracy": acc}
                    ctx.notes["accuracy_aware_history"] = history
                    return ModelState(onnx_path=out)
        except PassError:
            raise
        except Exception as err:
            raise PassError(self.name, f"{type(err).__name__}: {str(err)[:300]}") from None
        raise PassError(
            self.name,
            f"validation accuracy {acc:.4f} stays below {floor:.4f} after keeping {len(excluded)} "
            f"of the most sensitive layers in float ({excluded})",
        )
