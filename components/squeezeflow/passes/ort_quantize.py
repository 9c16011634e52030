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
from squeezeflow.passes.base import ModelState, OptimizationPass, PassConfig, PassContext, register_pass

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


def _require_onnx(model: ModelState, pass_name: str) -> Path:
    if model.onnx_path is None:
        raise PassError(pass_name, "needs an ONNX model; put torch passes before it in the recipe")
    return model.onnx_path


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

    def run(self, model: ModelState, config: DynamicInt8Config, ctx: PassContext) -> ModelState:
        from onnxruntime.quantization import quantize_dynamic

        src = _require_onnx(model, self.name)
        pre = _preprocess(src, ctx.workdir / "dynamic_pre.onnx")
        out = ctx.workdir / "dynamic_int8.onnx"
        try:
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


@register_pass
class OrtStaticInt8(OptimizationPass):
    name = "ort_static_int8"
    description = "ONNX Runtime static quantization to QDQ int8 with calibration data from the train split."
    input_kind = "onnx"
    Config = StaticInt8Config

    def run(self, model: ModelState, config: StaticInt8Config, ctx: PassContext) -> ModelState:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            quantize_static,
        )

        src = _require_onnx(model, self.name)
        pre = _preprocess(src, ctx.workdir / "static_pre.onnx")
        out = ctx.workdir / "static_int8.onnx"
        input_name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
        reader = _Reader(input_name, ctx, config.calibration_samples)
        CalibrationDataReader.register(_Reader)
        method = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[config.calibration_method]
        t0 = time.perf_counter()
        try:
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
                nodes_to_exclude=config.nodes_to_exclude or None,
            )
        except Exception as err:
            raise PassError(self.name, f"{type(err).__name__}: {str(err)[:300]}") from None
        log.info("static int8 calibration took %.1fs", time.perf_counter() - t0)
        return ModelState(onnx_path=out)
