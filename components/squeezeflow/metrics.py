"""Primary metrics. A metric takes labels and model outputs (logits) and returns a float, higher is better.

Built in: ``top1_accuracy``, ``top5_accuracy`` and ``macro_f1``. A job may also name its own metric as
``package.module:callable`` with the same signature ``fn(labels, logits) -> float`` (higher is better);
it is imported when the spec is validated, so a typo fails at the edge, naming the field.

The gate compares baseline and candidate *paired* on the same held-out samples. Metrics that are a
mean over samples (top-k accuracy) expose their per-sample scores, which makes the paired bootstrap
a cheap vectorised resampling; any other metric (macro F1, user metrics) is recomputed on each
bootstrap resample.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from squeezeflow.errors import SpecError

MetricFn = Callable[[np.ndarray, np.ndarray], float]
PerSampleFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

_USER_METRIC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def top1_accuracy(labels: np.ndarray, logits: np.ndarray) -> float:
    """Fraction of samples whose highest-scoring class is the label."""
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def per_sample_correct(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Per-sample 0/1 top-1 correctness (the paired evidence the gate compares)."""
    return (np.argmax(logits, axis=1) == labels).astype(np.int8)


def per_sample_top5(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Per-sample 0/1: the label is among the five highest-scoring classes (all classes when fewer)."""
    k = min(5, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return np.any(top == labels[:, None], axis=1).astype(np.int8)


def top5_accuracy(labels: np.ndarray, logits: np.ndarray) -> float:
    """Fraction of samples whose label is among the five highest-scoring classes."""
    return float(np.mean(per_sample_top5(labels, logits)))


def macro_f1_from_predictions(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of the per-class F1 over the classes present in ``labels`` or ``pred``
    (the convention of scikit-learn's ``f1_score(average="macro")``; a class with no true and no
    predicted samples is left out rather than counted as 0 or 1)."""
    cm = np.bincount(labels * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    denom = support + predicted
    present = denom > 0
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=present)
    return float(f1[present].mean()) if present.any() else 0.0


def macro_f1(labels: np.ndarray, logits: np.ndarray) -> float:
    """Unweighted mean over classes of F1 of the top-1 prediction: a class the model neglects weighs
    as much as a frequent one, which top-1 accuracy hides on imbalanced data."""
    num_classes = max(int(logits.shape[1]), int(labels.max()) + 1 if len(labels) else 1)
    return macro_f1_from_predictions(labels.astype(np.int64), np.argmax(logits, axis=1), num_classes)


METRICS: dict[str, MetricFn] = {
    "top1_accuracy": top1_accuracy,
    "top5_accuracy": top5_accuracy,
    "macro_f1": macro_f1,
}

# Metrics that are the mean of a per-sample score: the gate's bootstrap resamples those directly.
PER_SAMPLE: dict[str, PerSampleFn] = {
    "top1_accuracy": per_sample_correct,
    "top5_accuracy": per_sample_top5,
}


def is_user_metric(name: str) -> bool:
    return ":" in name


def resolve_metric(name: str) -> MetricFn:
    """The metric function for a built-in name or a ``module:callable`` reference.

    Raises SpecError naming what is wrong (unknown name, module not importable, not callable)."""
    if name in METRICS:
        return METRICS[name]
    if not is_user_metric(name):
        raise SpecError(f"unknown metric {name!r}; built in: {sorted(METRICS)}, or give 'module:callable'")
    if not _USER_METRIC.match(name):
        raise SpecError(f"metric {name!r} must look like 'package.module:callable'")
    from squeezeflow.user_code import import_user_callable

    return _checked(name, import_user_callable(name, "metric", SpecError))


def _checked(name: str, fn: Callable[..., object]) -> MetricFn:
    def metric(labels: np.ndarray, logits: np.ndarray) -> float:
        value = fn(labels, logits)
        try:
            out = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise SpecError(
                f"metric {name!r} must return a number, returned {type(value).__name__}"
            ) from None
        if not np.isfinite(out):
            raise SpecError(f"metric {name!r} returned {out} (not finite)")
        return out

    metric.__name__ = name
    return metric
