"""Paired statistics for the accuracy gate.

The baseline and the candidate are scored on the same held-out samples, so what matters is how
often they disagree on correctness, not each accuracy's own error bar. A paired bootstrap over the
per-sample differences gives a one-sided upper confidence bound on the drop; the gate passes only
when that bound is within the tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class DropEstimate:
    drop: float
    lower: float
    upper: float
    n: int
    discordant: int
    confidence: float


def paired_bootstrap_drop(
    base_correct: np.ndarray, cand_correct: np.ndarray, confidence: float, samples: int = 2000, seed: int = 0
) -> DropEstimate:
    """Drop in accuracy (baseline minus candidate) with a one-sided ``confidence`` upper bound and the
    matching lower bound, from ``samples`` paired bootstrap resamples."""
    d = base_correct.astype(np.int8) - cand_correct.astype(np.int8)
    n = len(d)
    drop = float(d.mean()) if n else 0.0
    discordant = int(np.count_nonzero(d))
    if n == 0 or discordant == 0:
        return DropEstimate(drop, drop, drop, n, discordant, confidence)
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    chunk = max(1, 2_000_000 // n)  # bound memory: chunk * n indices at a time
    for i in range(0, samples, chunk):
        k = min(chunk, samples - i)
        means[i : i + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
    lower, upper = np.quantile(means, [1 - confidence, confidence])
    return DropEstimate(drop, float(lower), float(upper), n, discordant, confidence)


def samples_needed(est: DropEstimate, allowed: float) -> int | None:
    """Roughly how many held-out samples would let a candidate with this drop and this rate of
    disagreement pass (normal approximation); None when no sample size would (drop >= allowed)."""
    margin = allowed - max(est.drop, 0.0)
    if margin <= 0:
        return None
    rate = max(est.discordant / max(est.n, 1), 1.0 / max(est.n, 1))
    z = NormalDist().inv_cdf(est.confidence)
    return max(math.ceil(z * z * rate / (margin * margin)), math.ceil(1.0 / allowed) if allowed > 0 else 0)
