"""Paired statistics for the accuracy gate.

The baseline and the candidate are scored on the same held-out samples, so what matters is how
often they disagree on correctness, not each accuracy's own error bar. A paired bootstrap over the
per-sample differences gives a one-sided upper confidence bound on the drop; the gate passes only
when that bound is within the tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
    std: float | None = None  # standard deviation of the bootstrap drops (metric-level bootstrap)


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


def paired_bootstrap_metric_drop(
    metric: Callable[[np.ndarray, np.ndarray], float],
    labels: np.ndarray,
    base_outputs: np.ndarray,
    cand_outputs: np.ndarray,
    confidence: float,
    samples: int = 2000,
    seed: int = 0,
) -> DropEstimate:
    """Like :func:`paired_bootstrap_drop` for a metric that is not a mean over samples (macro F1, a
    user metric): each resample draws the same sample indices for both models and recomputes the
    metric on each, so the bound reflects the pairing."""
    n = len(labels)
    drop = metric(labels, base_outputs) - metric(labels, cand_outputs) if n else 0.0
    base_pred, cand_pred = np.argmax(base_outputs, 1), np.argmax(cand_outputs, 1)
    discordant = int(np.count_nonzero((base_pred == labels) != (cand_pred == labels)))
    if n == 0 or np.array_equal(base_outputs, cand_outputs):
        return DropEstimate(drop, drop, drop, n, discordant, confidence, 0.0)
    rng = np.random.default_rng(seed)
    drops = np.empty(samples)
    for i in range(samples):
        idx = rng.integers(0, n, size=n)
        drops[i] = metric(labels[idx], base_outputs[idx]) - metric(labels[idx], cand_outputs[idx])
    lower, upper = np.quantile(drops, [1 - confidence, confidence])
    return DropEstimate(drop, float(lower), float(upper), n, discordant, confidence, float(drops.std()))


def samples_needed(est: DropEstimate, allowed: float) -> int | None:
    """Roughly how many held-out samples would let a candidate with this drop and this rate of
    disagreement pass (normal approximation); None when no sample size would (drop >= allowed)."""
    margin = allowed - max(est.drop, 0.0)
    if margin <= 0:
        return None
    if est.std is not None and est.std > 0:
        # Metric-level bootstrap: its spread shrinks like 1/sqrt(n).
        z = NormalDist().inv_cdf(est.confidence)
        return max(math.ceil(est.n * (z * est.std / margin) ** 2), est.n + 1)
    rate = max(est.discordant / max(est.n, 1), 1.0 / max(est.n, 1))
    z = NormalDist().inv_cdf(est.confidence)
    return max(math.ceil(z * z * rate / (margin * margin)), math.ceil(1.0 / allowed) if allowed > 0 else 0)
