"""Primary metrics. A metric takes labels and model outputs (logits) and returns a float, higher is better."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def top1_accuracy(labels: np.ndarray, logits: np.ndarray) -> float:
    """Fraction of samples whose highest-scoring class is the label."""
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def per_sample_correct(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Per-sample 0/1 correctness (the paired evidence the gate compares)."""
    return (np.argmax(logits, axis=1) == labels).astype(np.int8)


METRICS: dict[str, MetricFn] = {"top1_accuracy": top1_accuracy}
