"""Structured channel pruning with Torch-Pruning's dependency graph (DepGraph), so residual and
concatenation paths stay consistent. Pruned models lose most of their accuracy until they are
fine-tuned, so a recipe must follow this pass with ``finetune``."""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)


class StructuredPruneConfig(PassConfig):
    ratio: float = Field(
        default=0.5, ge=0.0, le=0.95, description="Fraction of channels removed from each prunable layer."
    )
    importance: Literal["magnitude", "taylor", "lamp"] = Field(
        default="magnitude", description="Channel importance: L2 magnitude, first-order Taylor, or LAMP."
    )
    global_pruning: bool = Field(
        default=False, description="Rank channels across layers instead of per layer."
    )
    iterative_steps: int = Field(default=1, ge=1, le=20, description="Prune in this many steps.")
    round_to: int | None = Field(
        default=None, ge=1, le=64, description="Keep channel counts multiples of this."
    )
    taylor_batches: int = Field(default=8, ge=1, le=200, description="Train batches for Taylor gradients.")


def _classifier_layers(model: Any, num_classes: int) -> list[Any]:
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_classes]


@register_pass
class StructuredPrune(OptimizationPass):
    name = "structured_prune"
    description = "Structured channel pruning (Torch-Pruning DepGraph); follow it with finetune."
    input_kind = "torch"
    needs_recovery: ClassVar[bool] = True
    Config = StructuredPruneConfig

    def run(self, model: ModelState, config: StructuredPruneConfig, ctx: PassContext) -> ModelState:
        import torch
        import torch.nn.functional as F
        import torch_pruning as tp

        module = require_module(model, self.name)
        num_classes = int(ctx.train_y.max()) + 1
        example = torch.from_numpy(ctx.train_x[:2])
        importance = {
            "magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
            "taylor": lambda: tp.importance.GroupTaylorImportance(),
            "lamp": lambda: tp.importance.LAMPImportance(p=2),
        }[config.importance]()
        try:
            pruner = tp.pruner.MetaPruner(
                module,
                example,
                importance=importance,
                pruning_ratio=config.ratio,
                global_pruning=config.global_pruning,
                iterative_steps=config.iterative_steps,
                ignored_layers=_classifier_layers(module, num_classes),
                round_to=config.round_to,
            )
            base_macs, base_params = tp.utils.count_ops_and_params(module, example[:1])
            for _ in range(config.iterative_steps):
                if config.importance == "taylor":
                    module.zero_grad()
                    module.train()
                    rng = torch.Generator().manual_seed(ctx.seed)
                    idx = torch.randperm(len(ctx.train_x), generator=rng)[: 64 * config.taylor_batches]
                    for i in range(0, len(idx), 64):
                        b = idx[i : i + 64]
                        xb, yb = (
                            torch.from_numpy(ctx.train_x[b.numpy()]),
                            torch.from_numpy(ctx.train_y[b.numpy()]),
                        )
                        F.cross_entropy(module(xb), yb).backward()
                pruner.step()
            module.eval()
            macs, params = tp.utils.count_ops_and_params(module, example[:1])
        except PassError:
            raise
        except Exception as err:
            raise PassError(
                self.name, f"Torch-Pruning could not prune this model: {type(err).__name__}: {err}"
            ) from None
        ctx.notes["prune"] = {
            "macs_before": int(base_macs),
            "macs_after": int(macs),
            "params_before": int(base_params),
            "params_after": int(params),
        }
        log.info(
            "pruned: MACs %.2fM -> %.2fM, params %.0fk -> %.0fk",
            base_macs / 1e6,
            macs / 1e6,
            base_params / 1e3,
            params / 1e3,
        )
        return ModelState(torch_module=module)
