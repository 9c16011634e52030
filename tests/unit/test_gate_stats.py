"""The gate's paired statistics: the bound on the drop, and how many samples a pass would need."""

from __future__ import annotations

import numpy as np
import pytest

from squeezeflow.gate.stats import paired_bootstrap_drop, samples_needed


def correct(n: int, wrong: list[int]) -> np.ndarray:
    c = np.ones(n, dtype=np.int8)
    c[wrong] = 0
    return c


def test_identical_predictions_have_a_zero_width_bound() -> None:
    base = correct(1000, [1, 2, 3])
    est = paired_bootstrap_drop(base, base.copy(), confidence=0.95)
    assert est.drop == est.upper == est.lower == 0.0 and est.discordant == 0


def test_upper_bound_lies_above_the_measured_drop() -> None:
    base = correct(1500, list(range(0, 30)))
    cand = correct(1500, list(range(0, 45)))  # 15 more mistakes: a 1-point drop
    est = paired_bootstrap_drop(base, cand, confidence=0.95)
    assert est.drop == pytest.approx(0.01)
    assert est.lower < est.drop < est.upper
    assert est.upper > 0.01  # so a 1-point tolerance does not pass a measured 1-point drop


def test_bound_is_reproducible_with_a_seed() -> None:
    base, cand = correct(800, list(range(20))), correct(800, list(range(10, 35)))
    a = paired_bootstrap_drop(base, cand, confidence=0.9, seed=3)
    b = paired_bootstrap_drop(base, cand, confidence=0.9, seed=3)
    assert a == b


def test_a_candidate_that_fixes_as_many_as_it_breaks_has_a_bound_around_zero() -> None:
    base = correct(2000, list(range(0, 20)))
    cand = correct(2000, list(range(20, 40)))
    est = paired_bootstrap_drop(base, cand, confidence=0.95)
    assert est.drop == 0.0 and est.lower < 0 < est.upper < 0.01


def test_samples_needed_grows_with_disagreement_and_shrinks_with_margin() -> None:
    base = correct(300, list(range(0, 10)))
    few = paired_bootstrap_drop(base, correct(300, list(range(1, 11))), confidence=0.95)  # 2 discordant
    many = paired_bootstrap_drop(base, correct(300, list(range(5, 15))), confidence=0.95)  # 10 discordant
    assert samples_needed(many, 0.01) > samples_needed(few, 0.01)  # type: ignore[operator]
    assert samples_needed(few, 0.02) < samples_needed(few, 0.01)  # type: ignore[operator]


def test_no_sample_size_helps_a_candidate_whose_drop_exceeds_the_tolerance() -> None:
    est = paired_bootstrap_drop(correct(1000, []), correct(1000, list(range(30))), confidence=0.95)
    assert samples_needed(est, 0.01) is None
