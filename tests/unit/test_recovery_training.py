"""Recovery fine-tuning (training.finetune): when it may stop early, and what it keeps."""

from __future__ import annotations

import time

import numpy as np
import torch

from squeezeflow.training import accuracy, finetune, fit_schedule, length_batches
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


def test_a_schedule_sized_to_its_time_budget_keeps_what_fits_and_shrinks_what_does_not() -> None:
    # 10 steps of 1 s and a 2 s validation per epoch: 12 s an epoch.
    assert fit_schedule(1000.0, 6, 10, 1.0, 2.0) == (6, 10)
    assert fit_schedule(40.0, 6, 10, 1.0, 2.0) == (3, 10)
    assert fit_schedule(7.0, 6, 10, 1.0, 2.0) == (1, 5)
    assert fit_schedule(0.0, 6, 10, 1.0, 2.0) == (1, 1)


def test_a_budget_that_fits_leaves_recovery_exactly_as_it_would_have_been() -> None:
    # Sizing the schedule measures a few (distilling) training steps first; they must leave no trace
    # (weights, batch-norm statistics, the batch order and dropout all as without a budget).
    tx, ty = _noise_task(256, 4)
    vx, vy = _noise_task(64, 5)
    weights = []
    torch.manual_seed(1)
    teacher = tiny_cnn()
    for budget in (None, 3600.0):
        torch.manual_seed(0)
        model = torch.nn.Sequential(tiny_cnn(), torch.nn.Dropout(0.2), torch.nn.Linear(10, 10))
        report = finetune(
            model,
            tx,
            ty,
            vx,
            vy,
            epochs=2,
            lr=3e-3,
            batch_size=64,
            augment=False,
            max_seconds=budget,
            teacher=teacher,
        )
        assert report.epochs_run == report.planned_epochs == 2
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


def test_recovery_with_too_little_time_runs_a_shorter_schedule_to_its_end() -> None:
    # A deadline already passed: one shortened epoch, ended by its schedule (annealed), not cut off.
    torch.manual_seed(0)
    tx, ty = _noise_task(2048, 6)
    vx, vy = _noise_task(64, 7)
    model = tiny_cnn()
    report = finetune(
        model, tx, ty, vx, vy, epochs=8, lr=3e-3, batch_size=64, augment=False, deadline=time.time() - 1
    )
    assert report.planned_epochs == 8 and report.epochs_run == 1, report
    assert report.stopped == "time budget (shorter schedule)"
    assert report.budget_seconds == 0.0


def _teacher_calls(teacher: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    teacher.register_forward_hook(lambda _m, args, _out: calls.append(int(args[0].shape[0])))
    return calls


def test_distillation_runs_the_teacher_once_per_row_and_learns_what_per_step_distillation_learns() -> None:
    # A teacher forward in every step made distilling a pruned ResNet-18 3-4x costlier than fine-tuning
    # it. Its soft targets are computed once now; without augmentation they are the very targets the
    # per-step teacher gave, so the student ends where it would have.
    tx, ty = _noise_task(192, 4)
    vx, vy = _noise_task(64, 5)
    torch.manual_seed(1)
    teacher = tiny_cnn().eval()
    ends = {}
    for cached in (True, False):
        torch.manual_seed(0)
        student = tiny_cnn()
        calls = _teacher_calls(teacher)
        finetune(
            student, tx, ty, vx, vy, epochs=3, lr=3e-3, batch_size=32, teacher=teacher, augment=False,
            cache_teacher=cached,
        )  # fmt: skip
        teacher._forward_hooks.clear()
        ends[cached] = torch.cat([p.detach().flatten() for p in student.parameters()])
        # 3 epochs of 6 batches: 192 rows once, or 18 batches of 32
        assert sum(calls) == (192 if cached else 3 * 192), calls
    assert torch.allclose(ends[True], ends[False], atol=1e-4), (ends[True] - ends[False]).abs().max()
