"""Recovery fine-tuning (training.finetune): when it may stop early, and what it keeps."""

from __future__ import annotations

import numpy as np
import torch

from squeezeflow.training import finetune
from squeezeflow.zoo.cnn import tiny_cnn


def _noise_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64)


def test_a_plateau_while_the_learning_rate_is_still_high_does_not_stop_recovery() -> None:
    # Every label is one class the untrained model does not predict: validation accuracy reaches 1.0
    # within a few epochs and can never improve again, so the plateau starts early. Under the
    # one-cycle schedule the rate stays above a quarter of its peak until ~70% of the epochs, and
    # recovery must not be judged before then (it used to stop from half way: epoch 11 of 20).
    torch.manual_seed(0)
    model = tiny_cnn()
    tx, _ = _noise_task(256, 0)
    vx, _ = _noise_task(32, 1)
    with torch.no_grad():
        untrained = int(model.eval()(torch.from_numpy(vx)).argmax(1).mode().values)
    label = (untrained + 1) % 10
    ty, vy = np.full(256, label, dtype=np.int64), np.full(32, label, dtype=np.int64)
    report = finetune(model, tx, ty, vx, vy, epochs=20, lr=3e-3, batch_size=64, patience=1, augment=False)
    assert report.best_epoch <= 5 and report.best_val_accuracy == 1.0, report
    assert report.stopped == "early stop"
    assert report.epochs_run >= 14, report


def test_recovery_keeps_the_best_validation_weights() -> None:
    torch.manual_seed(0)
    tx, ty = _noise_task(256, 2)
    vx, vy = _noise_task(128, 3)
    model = tiny_cnn()
    report = finetune(model, tx, ty, vx, vy, epochs=4, lr=3e-3, batch_size=64, augment=False)
    model.eval()
    with torch.no_grad():
        acc = float((model(torch.from_numpy(vx)).argmax(1).numpy() == vy).mean())
    assert acc == report.best_val_accuracy == max([report.initial_val_accuracy, *report.history])
