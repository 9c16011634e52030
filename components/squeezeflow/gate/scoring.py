"""Scoring: what the gate measures of a candidate on the held-out split, beside the baseline's outputs
on the same samples."""

from __future__ import annotations

import numpy as np

from squeezeflow.gate.stats import DropEstimate, paired_bootstrap_drop, paired_bootstrap_metric_drop
from squeezeflow.metrics import PER_SAMPLE, resolve_metric
from squeezeflow.spec import JobSpec

# The gate's evidence keeps the candidate's confusion matrix (for a Kubeflow run's view) up to this many
# classes; past it the matrix is too large to read, and to keep in a JSON document.
CONFUSION_MAX_CLASSES = 100


def confusion_matrix(y: np.ndarray, logits: np.ndarray, num_classes: int) -> list[list[int]]:
    """Counts of (true class, predicted class): rows are the true class, columns the top-1 prediction."""
    pred = np.argmax(logits, axis=1)
    flat = np.asarray(y, dtype=np.int64) * num_classes + pred
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes).tolist()


def worst_class_recall_drop(y: np.ndarray, base_logits: np.ndarray, logits: np.ndarray) -> tuple[int, float]:
    """The class whose recall (on the held-out split) the candidate lowers most, and by how much."""
    base_pred, pred = np.argmax(base_logits, 1), np.argmax(logits, 1)
    worst, worst_drop = 0, -1.0
    for c in np.unique(y):
        mask = y == c
        d = float(np.mean(base_pred[mask] == c) - np.mean(pred[mask] == c))
        if d > worst_drop:
            worst, worst_drop = int(c), d
    return worst, worst_drop


def drop_estimate(
    metric_name: str, y: np.ndarray, base_logits: np.ndarray, logits: np.ndarray, spec: JobSpec
) -> DropEstimate:
    """The paired bootstrap of the primary metric's drop: resampling per-sample scores where the
    metric is a mean over samples, recomputing the metric per resample otherwise."""
    tol = spec.tolerance
    per_sample = PER_SAMPLE.get(metric_name)
    if per_sample is not None:
        return paired_bootstrap_drop(
            per_sample(y, base_logits),
            per_sample(y, logits),
            confidence=tol.confidence,
            samples=tol.bootstrap_samples,
            seed=spec.search.seed,
        )
    return paired_bootstrap_metric_drop(
        resolve_metric(metric_name),
        y,
        base_logits,
        logits,
        confidence=tol.confidence,
        samples=tol.bootstrap_samples,
        seed=spec.search.seed,
    )
