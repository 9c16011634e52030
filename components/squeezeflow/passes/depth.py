"""Depth pruning: drop whole blocks (residual blocks, inverted-residual blocks, transformer layers) chosen by
measured importance, then recover with ``finetune`` (optionally distilling from the baseline).

What can be dropped is found without per-architecture code: a *block* is a child of an ``nn.Sequential``
or ``nn.ModuleList`` that holds a weight matrix or kernel (not a lone BatchNorm or activation), is called
once per forward, and returns a tensor of its first input's shape and dtype on sample train inputs.
Replacing it by a module that returns its first input (:class:`SkippedBlock`) leaves a valid model: for a
residual block ``x + f(x)`` it skips the block, for a transformer layer in a ``ModuleList`` it passes the
hidden states through. A block nested in another block is offered on its own, the outer one not (a stage
of one block is that block).

Importance (``Config.importance``):

* ``influence``: the validation loss (cross-entropy on up to ``val_samples`` validation samples) with
  that block alone dropped; the blocks whose dropping costs least go first (block influence).
* ``activation``: one minus the mean cosine similarity between a block's input and output on the same
  samples (Minitron's depth ranking): a block that barely changes its input goes first. One forward
  pass in all.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar, Literal

from pydantic import Field

from squeezeflow.errors import PassError
from squeezeflow.passes.base import (
    ModelState,
    OptimizationPass,
    PassConfig,
    PassContext,
    register_pass,
    require_module,
)
from squeezeflow.passes.searchable import FloatRange, ProposedStep, Searchable, SearchedTrial

log = logging.getLogger(__name__)

NO_BLOCK = (
    "no block whose output has its input's shape inside an nn.Sequential/nn.ModuleList "
    "(a residual block, an inverted-residual block with a skip, a transformer layer) to drop"
)


class DepthPruneConfig(PassConfig):
    ratio: float = Field(
        default=0.25,
        ge=0.0,
        le=0.9,
        description="Fraction of the droppable blocks dropped (rounded down; at least one when above 0).",
    )
    importance: Literal["influence", "activation"] = Field(
        default="influence",
        description="Block ranking: validation loss with the block alone dropped (influence), or one "
        "minus the cosine similarity of its input and output (activation, Minitron style).",
    )
    val_samples: int = Field(
        default=512, ge=8, le=100_000, description="Validation samples the blocks are ranked on."
    )
    batch_size: int = Field(default=128, ge=1, le=8192)


def skipped_block(dropped: str = "") -> Any:
    """A module returning its first input, standing in for the dropped block ``dropped`` (its name)."""
    from squeezeflow.passes.skipped_block import SkippedBlock

    return SkippedBlock(dropped)


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    import torch

    first = args[0] if args else next(iter(kwargs.values()), None)
    return first if isinstance(first, torch.Tensor) else None


def droppable_blocks(module: Any, sample: Any) -> list[tuple[str, Any, str]]:
    """``(qualified name, parent container, child name)`` of every block of ``module`` that can be
    replaced by its first input, found on a forward pass over ``sample`` (see the module docstring)."""
    import torch
    from torch import nn

    candidates: dict[int, tuple[str, Any, str]] = {}
    by_id: dict[int, Any] = {}
    for parent_name, parent in module.named_modules():
        if not isinstance(parent, nn.Sequential | nn.ModuleList):
            continue
        for child_name, child in parent.named_children():
            has_kernel = any(p.ndim >= 2 for p in child.parameters())
            if not has_kernel or not list(child.children()):
                continue  # a lone layer (conv, linear, norm, activation) is not a block
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            candidates.setdefault(id(child), (name, parent, child_name))
            by_id[id(child)] = child
    calls: dict[int, int] = dict.fromkeys(candidates, 0)
    same: dict[int, bool] = dict.fromkeys(candidates, True)

    def hook(key: int) -> Any:
        def record(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            calls[key] += 1
            first = _first_tensor(args, kwargs)
            if (
                first is None
                or not isinstance(output, torch.Tensor)
                or output.shape != first.shape
                or output.dtype != first.dtype
            ):
                same[key] = False

        return record

    handles = [by_id[k].register_forward_hook(hook(k), with_kwargs=True) for k in candidates]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(sample)
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    kept = {k: v for k, v in candidates.items() if calls[k] == 1 and same[k]}
    # Offer the innermost blocks: a block holding another droppable block is not offered itself.
    inner = {
        k for k in kept if any(other != k and kept[other][0].startswith(kept[k][0] + ".") for other in kept)
    }
    return [v for k, v in kept.items() if k not in inner]


def blocks_to_drop(count: int, ratio: float) -> int:
    """How many of ``count`` droppable blocks ``ratio`` drops: rounded down, at least one above 0."""
    if ratio <= 0 or count == 0:
        return 0
    return min(count, max(1, math.floor(ratio * count + 1e-9)))


@register_pass
class DepthPrune(OptimizationPass):
    name = "depth_prune"
    description = (
        "Depth pruning: drop whole residual blocks / transformer layers ranked by validation-loss "
        "influence or input-output similarity; follow it with finetune."
    )
    input_kind = "torch"
    needs_recovery: ClassVar[bool] = True
    Config = DepthPruneConfig
    searchable = (
        Searchable(
            "depth_ratio",
            FloatRange(0.0, 0.5, step=0.125),
            order=55,
            description="Fraction of the droppable blocks dropped; 0 keeps every block.",
            enabled_by="depth",
        ),
    )
    search_slot = 5  # before low-rank factorisation (10) and channel pruning (20), so recovery follows

    @classmethod
    def search_steps(cls, trial: SearchedTrial) -> list[ProposedStep]:
        ratio = round(float(trial.params.get("depth_ratio", 0.0)), 3)
        if ratio <= 0:
            return []
        return [ProposedStep(cls.name, {"ratio": ratio}, f"depth{round(ratio * 100)}")]

    def run(self, model: ModelState, config: DepthPruneConfig, ctx: PassContext) -> ModelState:
        import torch

        module = require_module(model, self.name)
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        sample = torch.from_numpy(ctx.train_x[:2]).to(device)
        try:
            blocks = droppable_blocks(module, sample)
        except Exception as err:
            raise PassError(
                self.name, f"the model failed on sample inputs: {type(err).__name__}: {err}"
            ) from None
        if not blocks:
            raise PassError(self.name, NO_BLOCK)
        k = blocks_to_drop(len(blocks), config.ratio)
        params_before = _count_params(module)
        macs_before = _count_macs(module, sample[:1])
        n = min(config.val_samples, len(ctx.val_x))
        rng = torch.Generator().manual_seed(ctx.seed)
        idx = torch.randperm(len(ctx.val_x), generator=rng)[:n].sort().values.numpy()
        val_x = torch.from_numpy(ctx.val_x[idx])
        val_y = torch.from_numpy(ctx.val_y[idx]).long()
        was_training = module.training
        module.eval()
        loss_before = _val_loss(module, val_x, val_y, config.batch_size, device)
        scores: list[float]
        if k == 0:
            scores = [0.0] * len(blocks)  # nothing to drop: no ranking to measure
        elif config.importance == "influence":
            scores = []
            for name, parent, child in blocks:
                original = getattr(parent, child)
                setattr(parent, child, skipped_block(name))
                try:
                    scores.append(_val_loss(module, val_x, val_y, config.batch_size, device) - loss_before)
                finally:
                    setattr(parent, child, original)
        else:
            scores = _dissimilarity(module, blocks, val_x, config.batch_size, device)
        order = sorted(range(len(blocks)), key=lambda i: (scores[i], i))
        dropped = sorted(order[:k])
        for i in dropped:
            name, parent, child = blocks[i]
            setattr(parent, child, skipped_block(name))
        loss_after = _val_loss(module, val_x, val_y, config.batch_size, device)
        module.train(was_training)
        params_after = _count_params(module)
        macs_after = _count_macs(module, sample[:1]) if macs_before is not None else None
        names = [blocks[i][0] for i in dropped]
        ctx.notes["depth_prune"] = {
            "blocks_before": len(blocks),
            "blocks_dropped": k,
            "params_before": params_before,
            "params_after": params_after,
            "val_loss_before": loss_before,
            "val_loss_after": loss_after,
            **({"macs_before": macs_before, "macs_after": macs_after} if macs_after is not None else {}),
        }
        ctx.notes["depth_prune_blocks"] = names  # not a number: kept with the candidate, not a metric
        # The blocks left in place, each where it was in the baseline: a recovery distilling hidden states
        # (finetune's hidden_weight) matches each to the baseline block of the same name.
        ctx.notes["depth_prune_kept"] = [blocks[i][0] for i in range(len(blocks)) if i not in dropped]
        log.info(
            "depth pruning (%s): dropped %d of %d blocks %s; params %.0fk -> %.0fk, val loss %.4f -> %.4f",
            config.importance,
            k,
            len(blocks),
            names,
            params_before / 1e3,
            params_after / 1e3,
            loss_before,
            loss_after,
        )
        return ModelState(torch_module=module)


def _count_params(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _count_macs(module: Any, example: Any) -> int | None:
    """MACs of one sample (Torch-Pruning's counter), or None when it cannot count this model."""
    import torch_pruning as tp

    try:
        macs, _params = tp.utils.count_ops_and_params(module, example)
    except Exception as err:  # a counter's failure is no reason to refuse the pass
        log.info("could not count MACs: %s: %s", type(err).__name__, err)
        return None
    return int(macs)


def _val_loss(module: Any, x: Any, y: Any, batch_size: int, device: Any) -> float:
    import torch
    import torch.nn.functional as F

    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = module(x[i : i + batch_size].to(device))
            total += float(F.cross_entropy(logits.float(), y[i : i + batch_size].to(device), reduction="sum"))
    return total / max(1, len(x))


def _dissimilarity(
    module: Any, blocks: list[tuple[str, Any, str]], x: Any, batch_size: int, device: Any
) -> list[float]:
    """One minus the mean (over samples) cosine similarity of each block's first input and its output."""
    import torch
    import torch.nn.functional as F

    sums = [0.0] * len(blocks)
    count = 0

    def hook(i: int) -> Any:
        def record(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            first = _first_tensor(args, kwargs)
            a, b = first.flatten(1).float(), output.flatten(1).float()
            sums[i] += float(F.cosine_similarity(a, b, dim=1).sum())

        return record

    handles = [
        getattr(parent, child).register_forward_hook(hook(i), with_kwargs=True)
        for i, (_n, parent, child) in enumerate(blocks)
    ]
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                batch = x[i : i + batch_size].to(device)
                module(batch)
                count += len(batch)
    finally:
        for h in handles:
            h.remove()
    return [1.0 - s / max(1, count) for s in sums]
