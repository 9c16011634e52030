"""Recovery fine-tuning (training.finetune): when it may stop early, and what it keeps."""

from __future__ import annotations

import numpy as np
import torch

from squeezeflow.training import accuracy, finetune, length_batches
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


class _MaskedMeanModel(torch.nn.Module):
    """A token-id model that ignores the pad id 0: embedding, mean over the real tokens, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).unsqueeze(-1).float()
        pooled = (self.emb(ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.fc(pooled)


def _texts(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 32), dtype=np.int64)
    y = rng.integers(0, 2, n).astype(np.int64)
    for i in range(n):
        length = int(rng.integers(2, 33))
        # class 1 texts use ids 25..49, class 0 texts 1..24: learnable
        x[i, :length] = rng.integers(25, 50, length) if y[i] else rng.integers(1, 25, length)
    return x, y


def test_trimmed_padding_gives_the_same_answers_and_still_learns_a_text_task() -> None:
    torch.manual_seed(0)
    x, y = _texts(400, 0)
    vx, vy = _texts(200, 1)
    model = _MaskedMeanModel()
    assert accuracy(model, vx, vy, trim_padding=True) == accuracy(model, vx, vy)
    report = finetune(model, x, y, vx, vy, epochs=4, lr=1e-2, batch_size=32, trim_padding=True)
    assert report.best_val_accuracy > 0.9 > report.initial_val_accuracy
    assert accuracy(model, vx, vy, trim_padding=True) == accuracy(model, vx, vy) == report.best_val_accuracy


def test_length_batches_cover_every_row_once_in_batches_of_similar_length() -> None:
    lengths = np.random.default_rng(0).integers(1, 65, 1000)
    batches = length_batches(lengths, 32, torch.Generator().manual_seed(0), bucket=8)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(1000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 10  # random batches of 32 would spread over ~60 of the 64 positions
