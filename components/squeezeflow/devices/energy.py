"""An estimated energy per inference, from a stated per-operation energy model.

This is an estimate of the arithmetic and weight traffic a model needs, not a measurement of any
device: it ranks candidates by how much work they ask for. Use a power meter on the device for
absolute numbers.

The model (``HOROWITZ_45NM``) takes its constants from M. Horowitz, "Computing's energy problem (and
what we can do about it)", IEEE International Solid-State Circuits Conference (ISSCC) 2014, Digest of
Technical Papers, pp. 10-14, the energy table for a 45 nm process at 0.9 V:

* 32-bit float multiply 3.7 pJ, 32-bit float add 0.9 pJ: a float multiply-accumulate is 4.6 pJ;
* 8-bit integer multiply 0.2 pJ, 32-bit integer add 0.1 pJ: an int8 multiply-accumulate, which
  accumulates in 32 bits as int8 GEMM and convolution kernels do, is 0.3 pJ;
* DRAM access 1.3-2.6 nJ per 64-bit word: the lower end, 1.3 nJ / 8 bytes = 162.5 pJ per byte.

Assumptions:

* every counted MAC (``squeezeflow.onnx_cost``) costs one MAC of its precision; operations that are
  not MACs (activations, normalisation, pooling, quantize/dequantize) are ignored;
* the weights are read once from DRAM per batch (so per sample, weight bytes / batch size), the
  activations stay in on-chip caches and cost nothing; caches, control and static power are ignored;
* 4-bit integer MACs are charged as int8 ones.

Newer processes spend less per operation (roughly proportionally for arithmetic, much less so for
DRAM), so the estimate's ratios between candidates are more meaningful than its absolute value.
"""

from __future__ import annotations

from dataclasses import dataclass

_PJ_PER_MJ = 1e9


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation, in picojoules."""

    name: str
    float_mac_pj: float
    int8_mac_pj: float
    dram_pj_per_byte: float


HOROWITZ_45NM = EnergyModel(
    name="horowitz-isscc2014-45nm",
    float_mac_pj=3.7 + 0.9,  # fp32 multiply + fp32 add
    int8_mac_pj=0.2 + 0.1,  # int8 multiply + int32 add (the accumulator)
    dram_pj_per_byte=1300.0 / 8,  # 1.3 nJ per 64-bit DRAM access
)


@dataclass(frozen=True)
class EnergyEstimate:
    """Estimated energy of one inference of one sample, in millijoules, and where it goes."""

    compute_mj: float
    weights_mj: float
    model: str

    @property
    def total_mj(self) -> float:
        return self.compute_mj + self.weights_mj


def estimate_energy(
    float_macs: int,
    int8_macs: int,
    weight_bytes: int,
    batch_size: int = 1,
    model: EnergyModel = HOROWITZ_45NM,
) -> EnergyEstimate:
    """Energy per sample of a model that does ``float_macs`` and ``int8_macs`` per sample and reads
    ``weight_bytes`` of weights once per batch of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if min(float_macs, int8_macs, weight_bytes) < 0:
        raise ValueError("MAC and byte counts cannot be negative")
    compute = float_macs * model.float_mac_pj + int8_macs * model.int8_mac_pj
    weights = weight_bytes * model.dram_pj_per_byte / batch_size
    return EnergyEstimate(compute_mj=compute / _PJ_PER_MJ, weights_mj=weights / _PJ_PER_MJ, model=model.name)
