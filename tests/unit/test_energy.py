"""The energy estimate: Horowitz's 45 nm per-operation figures applied to MACs and weight traffic."""

from __future__ import annotations

import pytest

from squeezeflow.devices.energy import HOROWITZ_45NM, EnergyModel, estimate_energy


def test_the_model_uses_the_cited_45nm_figures() -> None:
    assert HOROWITZ_45NM.float_mac_pj == pytest.approx(3.7 + 0.9)  # fp32 multiply + fp32 add
    assert HOROWITZ_45NM.int8_mac_pj == pytest.approx(0.2 + 0.1)  # int8 multiply + int32 add
    assert HOROWITZ_45NM.dram_pj_per_byte == pytest.approx(1300 / 8)  # 1.3 nJ per 64-bit access


def test_a_million_float_macs_cost_4_6_microjoules() -> None:
    e = estimate_energy(float_macs=1_000_000, int8_macs=0, weight_bytes=0)
    assert e.compute_mj == pytest.approx(4.6e-3) and e.weights_mj == 0 and e.total_mj == pytest.approx(4.6e-3)


def test_int8_arithmetic_is_about_fifteen_times_cheaper_than_float() -> None:
    f = estimate_energy(1_000_000, 0, 0).total_mj
    q = estimate_energy(0, 1_000_000, 0).total_mj
    assert f / q == pytest.approx(4.6 / 0.3)


def test_weights_are_read_once_per_batch() -> None:
    one = estimate_energy(0, 0, weight_bytes=8_000_000, batch_size=1)
    assert one.weights_mj == pytest.approx(8_000_000 * 162.5e-9)  # 1.3 mJ for 8 MB
    assert estimate_energy(0, 0, 8_000_000, batch_size=8).weights_mj == pytest.approx(one.weights_mj / 8)


def test_another_energy_model_can_be_given() -> None:
    newer = EnergyModel(name="x", float_mac_pj=1.0, int8_mac_pj=0.1, dram_pj_per_byte=10.0)
    e = estimate_energy(10, 10, 10, model=newer)
    assert e.total_mj == pytest.approx((10 + 1 + 100) * 1e-9) and e.model == "x"


@pytest.mark.parametrize(("macs", "batch"), [(-1, 1), (1, 0)])
def test_negative_counts_and_empty_batches_are_refused(macs: int, batch: int) -> None:
    with pytest.raises(ValueError):
        estimate_energy(macs, 0, 0, batch_size=batch)
