"""ONNX Runtime weight-only int4: the constant-weight ``MatMul`` nodes of a transformer become
``MatMulNBits`` (4-bit weights in blocks along the input dimension, one scale per block), through ONNX
Runtime's own quantizer (``MatMulNBitsQuantizer``).

Weights are stored at about a quarter of their float size (half of int8's). With ``accuracy_level`` 4,
ONNX Runtime's CPU kernel computes in int8 (activations quantized per block at run time), its fast path on
x86 (AVX2, AVX-512 VNNI) and ARM. Only ``MatMul`` is converted: a ``Gemm`` (a 2-D ``nn.Linear``, such as a
classifier head) is left for a following ``ort_dynamic_int8``, which is what the search's ``int4`` choice
does for token-id models (int4 linears, int8 for the rest). Convolutions have no int4 kernel in ONNX
Runtime: image models are left to the int8 passes.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field

from squeezeflow.errors import PassError
from squeezeflow.library_output import onnxruntime_quantizer_to_debug_log
from squeezeflow.passes.base import ModelState, OptimizationPass, PassConfig, PassContext, register_pass
from squeezeflow.passes.ort_quantize import QUANTIZE, require_onnx
from squeezeflow.passes.searchable import Categorical, ProposedStep, Searchable, SearchedTrial

log = logging.getLogger(__name__)

# The int4 block size, searched when the trial quantizes to int4: 32 input channels per scale is ONNX
# Runtime's usual choice; 64 and 128 store fewer scales (smaller, and fewer dequantization steps in the
# kernel) at some accuracy, which the gate then judges. The first choice (32) keeps its old label.
INT4_BLOCK = Searchable(
    "int4_block_size",
    Categorical((32, 64, 128)),
    order=45,
    description="Input channels sharing one int4 scale, when the trial quantizes to int4 (token-id models).",
    narrowed_by="int4_block_size",
    when=lambda params: params.get(QUANTIZE.name) == "int4",
)


class WeightInt4Config(PassConfig):
    block_size: Literal[16, 32, 64, 128, 256] = Field(
        default=32,
        description="Input channels sharing one scale (smaller: more accurate, slightly larger).",
    )
    symmetric: bool = Field(default=True, description="Symmetric blocks (no zero points).")
    accuracy_level: Literal[0, 1, 2, 3, 4] = Field(
        default=4,
        description="Compute type of ONNX Runtime's MatMulNBits kernel: 0 unset, 1 fp32, 2 fp16, 3 bf16, "
        "4 int8 (activations quantized per block at run time; the fast CPU path).",
    )


def _count(path: object, op: str) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sum(1 for n in model.graph.node if n.op_type == op)


@register_pass
class OrtWeightInt4(OptimizationPass):
    name = "ort_int4_weight_only"
    description = "ONNX Runtime weight-only int4 (MatMulNBits) for transformer MatMuls; int8 for the rest."
    input_kind = "onnx"
    Config = WeightInt4Config
    search_slot = 49  # before ort_dynamic_int8 (50), which then quantizes what int4 left
    searchable = (INT4_BLOCK,)

    @classmethod
    def search_steps(cls, trial: SearchedTrial) -> list[ProposedStep]:
        if not trial.token_ids or str(trial.params.get(QUANTIZE.name, "none")) != "int4":
            return []
        block = int(trial.params.get(INT4_BLOCK.name, 32))
        return [ProposedStep(cls.name, {"block_size": block}, "int4" if block == 32 else f"int4b{block}")]

    def run(self, model: ModelState, config: WeightInt4Config, ctx: PassContext) -> ModelState:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )

        src = require_onnx(model, self.name)
        matmuls = _count(src, "MatMul")
        if matmuls == 0:
            raise PassError(
                self.name, "the model has no MatMul node (int4 covers MatMul only, not Conv or Gemm)"
            )
        out = ctx.workdir / "int4.onnx"
        try:
            algo = DefaultWeightOnlyQuantConfig(
                block_size=config.block_size,
                is_symmetric=config.symmetric,
                accuracy_level=config.accuracy_level,
            )
            with onnxruntime_quantizer_to_debug_log(log):
                quantizer = MatMulNBitsQuantizer(
                    onnx.load(str(src)),
                    block_size=config.block_size,
                    is_symmetric=config.symmetric,
                    accuracy_level=config.accuracy_level,
                    algo_config=algo,
                )
                quantizer.process()
                quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
        except Exception as err:
            raise PassError(self.name, f"{type(err).__name__}: {str(err)[:300]}") from None
        converted = _count(out, "MatMulNBits")
        if converted == 0:
            raise PassError(
                self.name, f"none of the model's {matmuls} MatMul nodes has a constant weight int4 can take"
            )
        ctx.notes["int4"] = {"matmuls": matmuls, "matmuls_int4": converted, "block_size": config.block_size}
        log.info("int4 weight-only: %d of %d MatMul nodes", converted, matmuls)
        return ModelState(onnx_path=out)
