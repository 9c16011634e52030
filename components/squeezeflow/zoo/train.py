"""A small, reproducible trainer for the reference models in :mod:`squeezeflow.zoo.cnn`.

Usage::

    python -m squeezeflow.zoo.train --model small_resnet --data DATASET_DIR --out model.pt [--epochs N]

The dataset is a ``squeezeflow.npz/v1`` directory (see ``docs/dataset-format.md``). The saved file holds
only the model's ``state_dict``; a sidecar JSON next to it (``model.json``) names the factory and records
the accuracies.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from torch import nn

from squeezeflow.progress import terminal_progress
from squeezeflow.zoo.cnn import FACTORIES

__all__ = [
    "DEFAULT_EPOCHS",
    "TrainResult",
    "evaluate",
    "load_split",
    "main",
    "train_classifier",
    "train_reference_model",
]

logger = logging.getLogger(__name__)

FACTORY_MODULE: Final = "squeezeflow.zoo.cnn"


@dataclass(frozen=True)
class _Recipe:
    epochs: int
    lr: float
    batch_size: int
    augment: bool


# Defaults measured on a 2-core CPU (torch 2.13, animal-mnist seed 0), uncontended:
#   tiny_cnn      8 epochs  ~6 s,   test accuracy ~0.92
#   small_resnet 20 epochs  ~2 min, test accuracy ~0.975 (15 epochs: ~1.4 min, ~0.97)
# Every epoch roughly doubles or triples in time when other processes compete for the cores.
_RECIPES: Final[dict[str, _Recipe]] = {
    "tiny_cnn": _Recipe(epochs=8, lr=1e-2, batch_size=64, augment=False),
    "small_resnet": _Recipe(epochs=20, lr=3e-3, batch_size=128, augment=True),
    "resnet18_style": _Recipe(epochs=10, lr=1e-3, batch_size=128, augment=True),
    "wide_resnet": _Recipe(epochs=8, lr=3e-3, batch_size=128, augment=True),
    "compact_cnn": _Recipe(epochs=20, lr=3e-3, batch_size=128, augment=True),
    # MFCC inputs: no pixel shifts (a shift along the coefficients is not a plausible recording)
    "kws_resnet": _Recipe(epochs=15, lr=3e-3, batch_size=64, augment=False),
}
DEFAULT_EPOCHS: Final[dict[str, int]] = {name: r.epochs for name, r in _RECIPES.items()}


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_classifier` (accuracies of the best-validation weights)."""

    val_accuracy: float
    test_accuracy: float
    best_epoch: int
    epochs_run: int
    seconds: float
    stopped_early: bool


def load_split(dataset_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of a ``squeezeflow.npz/v1`` dataset as ``(x float32, y int64)`` tensors."""
    meta = json.loads((Path(dataset_dir) / "dataset.json").read_text(encoding="utf-8"))
    with np.load(Path(dataset_dir) / meta["splits"][split], allow_pickle=False) as data:
        x = np.ascontiguousarray(data["x"], dtype=np.float32)
        y = np.ascontiguousarray(data["y"], dtype=np.int64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{split}: x has {x.shape[0]} rows but y has {y.shape[0]}")
    return torch.from_numpy(x), torch.from_numpy(y)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on ``(x, y)``; restores the previous train/eval mode."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        logits = model(x[start : start + batch_size])
        correct += int((logits.argmax(1) == y[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, x.shape[0])


def _augment(xb: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Translate the batch by a random offset of up to ``max_shift`` pixels each way (zero padding).

    (Horizontal flips were tried and cost accuracy at a fixed time budget.)
    """
    _, _, h, w = xb.shape
    padded = nn.functional.pad(xb, (max_shift, max_shift, max_shift, max_shift))
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator).tolist()
    return padded[:, :, dy : dy + h, dx : dx + w]


def train_classifier(
    model: nn.Module,
    dataset_dir: Path,
    epochs: int,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    max_seconds: float | None = None,
    progress: bool = True,
    *,
    augment: bool = False,
    weight_decay: float = 1e-4,
    num_threads: int | None = None,
) -> TrainResult:
    """Train ``model`` in place on a ``squeezeflow.npz/v1`` dataset and keep its best-validation weights.

    Adam(W) with a one-cycle learning-rate schedule peaking at ``lr``; seeded (``random``, numpy, torch,
    and the shuffling/augmentation generator), so two runs with the same seed and thread count give the
    same weights. By default the thread count is torch's (``torch.get_num_threads()``); results can
    differ in the last bits between thread counts.

    Args:
        model: the network; trained in place and left in eval mode holding the best-validation weights.
        dataset_dir: the dataset directory.
        epochs: number of epochs (the learning-rate schedule spans all of them).
        batch_size: mini-batch size.
        lr: peak learning rate.
        seed: random seed.
        max_seconds: stop (after the current batch) once training has run this long; ``None`` for no limit.
        progress: show a ``rich`` progress bar per epoch.
        augment: shift each training batch by a random offset of up to 2 px.
        weight_decay: AdamW weight decay.
        num_threads: intra-op threads for this call only (restored afterwards); ``None`` keeps torch's
            default. On a machine whose cores are shared with other busy processes, 1 thread can be
            many times faster than 2.

    Returns:
        The best validation accuracy, the test accuracy of those weights, and timing.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _train(
            model,
            Path(dataset_dir),
            epochs,
            batch_size,
            lr,
            seed,
            max_seconds,
            progress,
            augment,
            weight_decay,
        )
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    model: nn.Module,
    dataset_dir: Path,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    max_seconds: float | None,
    progress: bool,
    augment: bool,
    weight_decay: float,
) -> TrainResult:
    _seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train = load_split(dataset_dir, "train")
    x_val, y_val = load_split(dataset_dir, "val")
    x_test, y_test = load_split(dataset_dir, "test")
    n = x_train.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch, pct_start=0.25
    )
    loss_fn = nn.CrossEntropyLoss()
    logger.info(
        "training %s on %s: %d samples, %d epochs, batch %d, lr %g, %d threads",
        type(model).__name__,
        dataset_dir,
        n,
        epochs,
        batch_size,
        lr,
        torch.get_num_threads(),
    )

    best_val = -1.0
    best_epoch = 0
    best_state: dict[str, Any] = copy.deepcopy(model.state_dict())
    epochs_run = 0
    stopped_early = False
    start = time.perf_counter()
    with terminal_progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        enabled=progress,
        transient=False,
    ) as bar:
        for epoch in range(1, epochs + 1):
            task = bar.add_task(f"epoch {epoch}/{epochs}", total=steps_per_epoch, loss=float("nan"))
            model.train()
            perm = torch.randperm(n, generator=generator)
            running = 0.0
            for step in range(steps_per_epoch):
                idx = perm[step * batch_size : (step + 1) * batch_size]
                if idx.numel() < 2:  # BatchNorm cannot train on a single sample
                    continue
                xb, yb = x_train[idx], y_train[idx]
                if augment:
                    xb = _augment(xb, generator)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(xb), yb)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_value = loss.item()
                running = 0.9 * running + 0.1 * loss_value if step else loss_value
                bar.update(task, advance=1, loss=running)
                if max_seconds is not None and time.perf_counter() - start > max_seconds:
                    stopped_early = True
                    break
            epochs_run = epoch
            val_acc = evaluate(model, x_val, y_val)
            logger.info("epoch %d/%d: loss %.4f, val accuracy %.4f", epoch, epochs, running, val_acc)
            if val_acc > best_val:
                best_val, best_epoch = val_acc, epoch
                best_state = copy.deepcopy(model.state_dict())
            if stopped_early:
                logger.warning(
                    "stopping after %.1f s (max_seconds=%s), in epoch %d", max_seconds, max_seconds, epoch
                )
                break
    seconds = time.perf_counter() - start
    model.load_state_dict(best_state)
    model.eval()
    test_acc = evaluate(model, x_test, y_test)
    logger.info(
        "done in %.1f s: best val accuracy %.4f (epoch %d), test accuracy %.4f",
        seconds,
        best_val,
        best_epoch,
        test_acc,
    )
    return TrainResult(
        val_accuracy=best_val,
        test_accuracy=test_acc,
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        seconds=seconds,
        stopped_early=stopped_early,
    )


@contextmanager
def _atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.chmod(0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _cached_sidecar(
    out_path: Path, sidecar: Path, factory: str, epochs: int, seed: int
) -> dict[str, Any] | None:
    if not (out_path.is_file() and sidecar.is_file()):
        return None
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(meta, dict) and (meta.get("factory"), meta.get("epochs"), meta.get("seed")) == (
        factory,
        epochs,
        seed,
    ):
        return meta
    return None


def train_reference_model(
    name: str,
    dataset_dir: Path,
    out_path: Path,
    epochs: int | None = None,
    seed: int = 0,
    *,
    progress: bool = True,
    num_threads: int | None = None,
) -> Path:
    """Build the zoo model ``name``, train it on ``dataset_dir`` and save its ``state_dict`` to ``out_path``.

    Also writes ``out_path.with_suffix('.json')``: ``{factory, factory_kwargs, val_accuracy, test_accuracy,
    epochs, seconds, seed, torch_version, ...}``. Both files are written atomically (temp file + rename).
    If both already exist for the same model, epochs and seed, nothing is retrained.

    Args:
        name: a zoo model (``small_resnet``, ``tiny_cnn``, ``resnet18_style``, ``wide_resnet``,
            ``compact_cnn``).
        dataset_dir: a ``squeezeflow.npz/v1`` dataset directory.
        out_path: where to save the state dict (e.g. ``model.pt``).
        epochs: number of epochs; ``None`` for the model's default (:data:`DEFAULT_EPOCHS`).
        seed: random seed.
        progress: show progress bars.
        num_threads: torch threads while training; ``None`` keeps torch's default.

    Returns:
        ``out_path``.
    """
    if name not in FACTORIES:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(FACTORIES)}")
    recipe = _RECIPES[name]
    epochs = recipe.epochs if epochs is None else epochs
    dataset_dir, out_path = Path(dataset_dir), Path(out_path)
    sidecar = out_path.with_suffix(".json")
    if sidecar == out_path:
        raise ValueError(f"out_path must not end in .json: {out_path}")
    factory = f"{FACTORY_MODULE}:{name}"
    cached = _cached_sidecar(out_path, sidecar, factory, epochs, seed)
    if cached is not None:
        logger.info(
            "%s already trained (%d epochs, seed %d) at %s; not retraining", name, epochs, seed, out_path
        )
        return out_path

    meta = json.loads((dataset_dir / "dataset.json").read_text(encoding="utf-8"))
    input_shape: Sequence[int] = meta["input_shape"]
    factory_kwargs = {"num_classes": int(meta["num_classes"]), "in_channels": int(input_shape[0])}
    _seed_everything(seed)  # weight initialisation is seeded too
    build: Callable[..., nn.Module] = FACTORIES[name]
    model = build(**factory_kwargs)
    result = train_classifier(
        model,
        dataset_dir,
        epochs=epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        seed=seed,
        progress=progress,
        augment=recipe.augment,
        num_threads=num_threads,
    )
    with _atomic_path(out_path) as tmp:
        torch.save(model.state_dict(), tmp)
    record = {
        "factory": factory,
        "factory_kwargs": factory_kwargs,
        "val_accuracy": result.val_accuracy,
        "test_accuracy": result.test_accuracy,
        "epochs": epochs,
        "best_epoch": result.best_epoch,
        "seconds": round(result.seconds, 3),
        "seed": seed,
        "torch_version": torch.__version__,
        "num_threads": num_threads or torch.get_num_threads(),
        "dataset": meta.get("name"),
        "training": {**asdict(recipe), "epochs": epochs},  # the epochs run, not the recipe's default
    }
    with _atomic_path(sidecar) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("saved %s state_dict to %s (test accuracy %.4f)", name, out_path, result.test_accuracy)
    return out_path


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m squeezeflow.zoo.train``."""
    parser = argparse.ArgumentParser(
        prog="python -m squeezeflow.zoo.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", required=True, choices=sorted(FACTORIES), help="zoo model to train")
    parser.add_argument("--data", required=True, type=Path, help="squeezeflow.npz/v1 dataset directory")
    parser.add_argument("--out", required=True, type=Path, help="where to save the state_dict (.pt)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the model's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    out = train_reference_model(
        args.model,
        args.data,
        args.out,
        epochs=args.epochs,
        seed=args.seed,
        progress=not args.no_progress,
        num_threads=args.threads,
    )
    print(out.with_suffix(".json").read_text(encoding="utf-8"), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def train_zoo_model(
    data_dir: str,
    output_path: str,
    base_model_uri: str | None = None,
    model: str = "small_resnet",
    epochs: int | None = None,
    seed: int = 0,
) -> None:
    """A ready-made training entry point for retrain-and-compress (Airflow DAG and Kubeflow pipeline):
    trains the zoo model ``model`` from scratch on ``data_dir`` (``base_model_uri`` is not used).

    Any ``module:callable`` of this shape works as the entry point::

        def train(data_dir: str, output_path: str, base_model_uri: str | None = None, **kwargs) -> None:
            ...  # train on the squeezeflow.npz/v1 dataset in data_dir
            torch.save(model.state_dict(), output_path)

    ``base_model_uri`` is the spec's current model (for warm starts); the weights written must fit the
    spec's ``model.factory``; ``kwargs`` come from the DAG's / pipeline's training kwargs.
    """
    train_reference_model(model, Path(data_dir), Path(output_path), epochs=epochs, seed=seed, progress=False)
