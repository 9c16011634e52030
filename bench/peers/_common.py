"""What the peer scripts share: the dataset reader and ONNX Runtime accuracy. numpy and onnxruntime
only, so the scripts run in the product's venv and in bench/.venv-peers alike (no squeezeflow)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def load_split(data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y int64)`` of one split of a squeezeflow.npz/v1 dataset: x float32, or int64 token ids."""
    meta = json.loads((Path(data_dir) / "dataset.json").read_text())
    with np.load(Path(data_dir) / meta["splits"][split], allow_pickle=False) as d:
        x = d["x"]
        dtype = np.int64 if np.issubdtype(x.dtype, np.integer) else np.float32
        return np.ascontiguousarray(x, dtype), np.ascontiguousarray(d["y"], np.int64)


def example_batch(x: np.ndarray) -> np.ndarray:
    """Two rows of the train split: an export example of the right dtype and realistic content."""
    return np.ascontiguousarray(x[:2])


def calibration_samples(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` samples of the train split, drawn at random (seeded), for calibration."""
    idx = np.random.default_rng(seed).permutation(len(x))[:n]
    return x[idx]


def stratified_subset(
    x: np.ndarray, y: np.ndarray, n: int | None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, class-stratified subset of ``n`` rows of ``(x, y)`` (each class keeps its share), in
    the split's order; the whole split when ``n`` is None or not smaller. For the accuracy-control
    loops' own evaluations on a large, slow model: the reported test accuracy is computed by
    bench/run.py on the full test split afterwards."""
    if n is None or n >= len(y):
        return x, y
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts * n / len(y)).astype(int)
    for i in np.argsort(-(counts * n / len(y) - quota))[: n - int(quota.sum())]:  # largest remainders
        quota[i] += 1
    idx = np.sort(
        np.concatenate(
            [rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota, strict=True)]
        )
    )
    return x[idx], y[idx]


def ort_session(model: str | Path | bytes, threads: int = 2) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def ort_predictions(sess: Any, x: np.ndarray, batch: int = 250) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate(
        [sess.run(None, {name: x[i : i + batch]})[0].argmax(1) for i in range(0, len(x), batch)]
    )


def ort_accuracy(model: str | Path | bytes, x: np.ndarray, y: np.ndarray, threads: int = 2) -> float:
    """Top-1 accuracy of an ONNX model in ONNX Runtime (CPU)."""
    return float(np.mean(ort_predictions(ort_session(model, threads), x) == y))


def emit(result: dict[str, Any]) -> None:
    """The script's result: one JSON object on the last stdout line (bench/run.py reads it)."""
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
