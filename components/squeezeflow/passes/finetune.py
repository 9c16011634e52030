"""Recovery fine-tuning on the train split, early-stopped on the validation split, optionally
distilling from the baseline (soft-target KL plus hard labels, and optionally the hidden states of
matched blocks)."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from squeezeflow.errors import PassError, TrialAbandoned
from squeezeflow.passes.base import ModelState, OptimizationPass, PassConfig, PassContext, register_pass
from squeezeflow.passes.searchable import (
    Categorical,
    ProposedStep,
    Searchable,
    SearchedTrial,
    first_choice,
)

if TYPE_CHECKING:
    from squeezeflow.training import FinetuneReport

log = logging.getLogger(__name__)


class FinetuneConfig(PassConfig):
    epochs: int = Field(
        default=6, ge=1, le=500, description="Maximum epochs (early stopping may end sooner)."
    )
    lr: float = Field(
        default=3e-3, gt=0, le=1.0, description="Peak learning rate (AdamW, one-cycle schedule)."
    )
    batch_size: int = Field(default=128, ge=1, le=8192)
    distill: bool = Field(
        default=False, description="Distil from the baseline model (knowledge distillation)."
    )
    temperature: float = Field(default=4.0, gt=0, le=50, description="Distillation temperature.")
    alpha: float = Field(default=0.5, ge=0, le=1, description="Weight of the distillation term.")
    patience: int = Field(
        default=2, ge=1, le=100, description="Epochs without validation gain before stopping."
    )
    max_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Time budget for this fine-tuning; the search's own deadline (search.max_seconds) "
        "may leave less, and the schedule is then sized to what fits.",
    )
    augment: bool = Field(default=True, description="Random small translations (image inputs only).")
    trim_padding: bool = Field(
        default=False,
        description="Token-id inputs: batch texts of similar length and cut each batch after its longest "
        "row (pad id 0). About 2x faster on short texts; exact only for models that mask the pad id.",
    )
    max_steps: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="At most this many batches per epoch, a seeded random subset of the train split "
        "(a short quantization-aware pass needs no full epoch).",
    )
    cache_teacher: bool = Field(
        default=True,
        description="When distilling, run the teacher once over the train split and reuse its soft targets "
        "(augmented images: its answer on the unshifted image), instead of once per step: distillation then "
        "costs about what plain fine-tuning does.",
    )
    quant_aware: bool = Field(
        default=False,
        description="Quantization-aware training: simulate dynamic int8 (per-channel int8 weights, uint8 "
        "inputs over their own range) on every nn.Linear, so a following ort_dynamic_int8 loses less.",
    )
    hidden_weight: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="Hidden-state distillation (needs distill): add this weight times the mean squared "
        "error between the outputs of the model's blocks and the baseline's blocks they came from "
        "(after depth_prune, the blocks it kept; else every block whose removal keeps the model valid, "
        "where the shapes still match; over non-pad tokens for token ids). 0 turns it off.",
    )

    @model_validator(mode="after")
    def _hidden_needs_teacher(self) -> FinetuneConfig:
        if self.hidden_weight > 0 and not self.distill:
            raise ValueError("hidden_weight > 0 distils hidden states from the baseline: set distill: true")
        return self


def recovery_epochs(ratio: float, space: Any) -> int:
    """Recovery epochs for a candidate pruned by ``ratio`` under the spec's ``search.space``.

    Channel pruning by ``r`` leaves about ``(1 - r)^2`` of the MACs, so an epoch of the pruned model
    costs that much less to train, and strongly pruned models need more epochs to recover (measured on
    the ResNet-18 reference: pruned by 80% it was back to the baseline's test accuracy after 11-12
    epochs, not 6; by 82%, 97.9% against 97.7% after 18).
    The engine spends the same training compute as ``finetune_epochs`` epochs at 50% pruning, capped
    at ``max_recovery_scale`` times ``finetune_epochs``.
    """
    base: int = space.finetune_epochs
    if ratio <= 0.5:
        return base
    scale = min(space.max_recovery_scale, (0.5 / (1.0 - ratio)) ** 2)
    return max(base, round(base * scale))


@register_pass
class Finetune(OptimizationPass):
    name = "finetune"
    description = "Recovery fine-tuning, optionally with knowledge distillation from the baseline."
    input_kind = "torch"
    Config = FinetuneConfig
    searchable = (
        Searchable(
            "distill",
            Categorical((False, True)),
            order=30,
            description="Distil from the baseline while recovering.",
            narrowed_by="distill",
            opening=first_choice,
        ),
    )
    search_slot = 30

    @classmethod
    def search_steps(cls, trial: SearchedTrial) -> list[ProposedStep]:
        """Every searched recipe recovers: for as many epochs as its pruning needs (recovery_epochs;
        dropped blocks count as the channel pruning that leaves as many MACs),
        at the spec's rate (pretrained text models get a gentler default), and for a text model that
        dynamic int8 follows, under simulated int8 (see training.fake_int8_dynamic)."""
        p, space, text = trial.params, trial.space, trial.token_ids
        ratio = round(float(p.get("prune_ratio", 0.0)), 2)
        depth = float(p.get("depth_ratio", 0.0))
        if depth > 0:
            # Dropping a fraction d of the blocks leaves about (1 - d) of their MACs, channel pruning by r
            # about (1 - r)^2: recover like the channel pruning that leaves as few.
            ratio = round(1.0 - (1.0 - ratio) * math.sqrt(1.0 - depth), 2)
        params: dict[str, Any] = {
            "epochs": recovery_epochs(ratio, space),
            "lr": space.finetune_lr or (1e-4 if text else 3e-3),
            "distill": bool(p["distill"]),
            **({"trim_padding": True} if text else {}),
            **({"quant_aware": True} if text and p.get("quantize", "none") != "none" else {}),
        }
        return [ProposedStep(cls.name, params, "kd" if p["distill"] else "ft")]

    def run(self, model: ModelState, config: FinetuneConfig, ctx: PassContext) -> ModelState:
        if model.torch_module is None:
            raise PassError(self.name, "needs a PyTorch model")
        if config.distill and ctx.teacher is None:
            raise PassError(self.name, "distill=true needs the baseline as a PyTorch module")
        hidden_layers = _hidden_layers(model.torch_module, ctx) if config.hidden_weight > 0 else None
        try:
            report = _finetune(model.torch_module, config, ctx, hidden_layers)
        except ValueError as err:
            if hidden_layers is None:
                raise
            raise PassError(self.name, f"hidden_weight > 0, but {err}") from None
        ctx.notes["finetune"] = {
            "epochs_planned": report.planned_epochs or config.epochs,
            "epochs_run": report.epochs_run,
            "best_epoch": report.best_epoch,
            "val_accuracy_before": report.initial_val_accuracy,
            "val_accuracy_after": report.best_val_accuracy,
            "seconds": report.seconds,
            "stopped": report.stopped,
            "device": report.device,
            "precision": report.precision,
            **({"hidden_layers": len(report.hidden_pairs)} if hidden_layers is not None else {}),
        }
        gave_up = report.rule_stop
        if gave_up is not None and gave_up.kind == "recovered":
            ctx.notes["finetune"]["seconds_saved"] = gave_up.seconds_saved
        elif gave_up is not None:
            ctx.notes["abandoned"] = {
                "epoch": gave_up.epoch,
                "epochs": gave_up.epochs,
                "val_best": gave_up.best,
                "val_floor": gave_up.floor,
                "gap": gave_up.gap,
                "projected": gave_up.projected,
                "seconds_saved": gave_up.seconds_saved,
            }
            raise TrialAbandoned(self.name, gave_up.reason, gave_up.seconds_saved)
        log.info(
            "fine-tuned %d epochs (%s, on %s at %s): val accuracy %.4f -> %.4f",
            report.epochs_run,
            report.stopped,
            report.device,
            report.precision,
            report.initial_val_accuracy,
            report.best_val_accuracy,
        )
        return model


def _finetune(
    module: Any, config: FinetuneConfig, ctx: PassContext, hidden_layers: list[str] | None
) -> FinetuneReport:
    from squeezeflow.training import finetune

    return finetune(
        module,
        ctx.train_x,
        ctx.train_y,
        ctx.val_x,
        ctx.val_y,
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        teacher=ctx.teacher if config.distill else None,
        temperature=config.temperature,
        alpha=config.alpha,
        patience=config.patience,
        max_seconds=config.max_seconds,
        augment=config.augment,
        seed=ctx.seed,
        trim_padding=config.trim_padding,
        quant_aware=config.quant_aware,
        max_steps=config.max_steps,
        deadline=ctx.deadline,
        cache_teacher=config.cache_teacher,
        hidden_layers=hidden_layers,
        hidden_weight=config.hidden_weight,
        abandon=ctx.recovery_check,
        setup=ctx.training,
    )


def _hidden_layers(module: Any, ctx: PassContext) -> list[str]:
    """The blocks whose outputs hidden-state distillation matches to the baseline's: the blocks depth
    pruning kept (each still under the name it had in the baseline), else the model's droppable blocks
    (the same notion of a block: residual blocks, transformer layers)."""
    import torch

    from squeezeflow.passes.depth import droppable_blocks

    kept = ctx.notes.get("depth_prune_kept")
    if kept:
        return list(kept)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    try:
        blocks = droppable_blocks(module, torch.from_numpy(ctx.train_x[:2]).to(device))
    except Exception as err:
        raise PassError(
            "finetune", f"the model failed on sample inputs: {type(err).__name__}: {err}"
        ) from None
    return [name for name, _parent, _child in blocks]
