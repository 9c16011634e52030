"""Scoring: what the gate measures of a candidate on the held-out split, beside the baseline's outputs
on the same samples."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from squeezeflow.gate.stats import DropEstimate, paired_bootstrap_drop, paired_bootstrap_metric_drop
from squeezeflow.metrics import PER_SAMPLE, resolve_metric
from squeezeflow.results import BaselineResult
from squeezeflow.spec.job import JobSpec
from squeezeflow.store.artifacts import ArtifactRef

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


@dataclass(frozen=True)
class HeldOut:
    """What a candidate is judged on: its model, the held-out split, and both models' outputs on it."""

    model: ArtifactRef  # the candidate's ONNX, as stored
    model_path: Path  # its local copy
    x: np.ndarray
    y: np.ndarray
    logits: np.ndarray  # the candidate's outputs
    base_logits: np.ndarray  # the baseline's, on the same samples
    num_classes: int
    class_names: list[str] | None

    @property
    def n(self) -> int:
        """How many held-out samples."""
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Scores:
    """What the gate measured of a candidate whose outputs are usable."""

    metric: float  # the primary metric
    drop: float  # the baseline's metric minus the candidate's
    agreement: float  # top-1 agreement with the baseline
    estimate: DropEstimate  # the paired bootstrap of the drop
    worst: tuple[int, float]  # the class whose recall dropped most, and by how much
    confusion: dict[str, object] | None  # classes and counts; None past CONFUSION_MAX_CLASSES


def score(spec: JobSpec, baseline: BaselineResult, held: HeldOut) -> Scores:
    """The candidate's primary metric, its drop from the baseline's (measured and bootstrapped), its
    agreement with the baseline, its worst class and its confusion matrix."""
    metric = resolve_metric(baseline.metric_name)(held.y, held.logits)
    k = held.num_classes
    return Scores(
        metric=metric,
        drop=baseline.metric - metric,
        agreement=float(np.mean(np.argmax(held.logits, 1) == np.argmax(held.base_logits, 1))),
        estimate=drop_estimate(baseline.metric_name, held.y, held.base_logits, held.logits, spec),
        worst=worst_class_recall_drop(held.y, held.base_logits, held.logits),
        confusion=(
            {
                "classes": list(held.class_names or [str(i) for i in range(k)]),
                "matrix": confusion_matrix(held.y, held.logits, k),
            }
            if k <= CONFUSION_MAX_CLASSES
            else None
        ),
    )
