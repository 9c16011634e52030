"""Low-rank factorisation: replace large Linear (and Conv2d) layers by two thinner ones from a
truncated SVD of their weights. Pays off on wide fully-connected layers (transformer FFNs,
classifier heads); a recipe follows it with ``finetune`` to recover accuracy."""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

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
from squeezeflow.passes.searchable import Categorical, ProposedStep, Searchable, SearchedTrial

log = logging.getLogger(__name__)


class LowRankConfig(PassConfig):
    rank_ratio: float = Field(
        default=0.25, gt=0.0, lt=1.0, description="Kept rank as a fraction of min(in, out) of each layer."
    )
    min_features: int = Field(default=64, ge=2, description="Only layers with min(in, out) at least this.")
    include_conv: bool = Field(default=False, description="Also factorise (non-grouped) Conv2d layers.")


def _factor(weight: Any, rank: int) -> tuple[Any, Any]:
    """W (out x in) ~= A (out x r) @ B (r x in), splitting the singular values evenly."""
    import torch

    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    root = torch.sqrt(s[:rank])
    return u[:, :rank] * root, root[:, None] * vh[:rank]


@register_pass
class LowRankFactorize(OptimizationPass):
    name = "lowrank_svd"
    description = "Truncated-SVD factorisation of large Linear/Conv2d layers; follow it with finetune."
    input_kind = "torch"
    needs_recovery: ClassVar[bool] = True
    Config = LowRankConfig
    searchable = (
        Searchable(
            "lowrank_ratio",
            Categorical((0.0, 0.25, 0.5)),
            order=50,
            description="Kept rank fraction; 0 leaves the model unfactorised.",
            enabled_by="lowrank",
        ),
    )
    search_slot = 10

    @classmethod
    def search_steps(cls, trial: SearchedTrial) -> list[ProposedStep]:
        ratio = trial.params.get("lowrank_ratio")
        if not ratio:
            return []
        return [ProposedStep(cls.name, {"rank_ratio": ratio}, f"lowrank{ratio:.2f}")]

    def run(self, model: ModelState, config: LowRankConfig, ctx: PassContext) -> ModelState:
        from torch import nn

        module = require_module(model, self.name)
        num_classes = int(ctx.train_y.max()) + 1
        replaced = 0
        for parent in list(module.modules()):
            for child_name, child in list(parent.named_children()):
                new = None
                if isinstance(child, nn.Linear) and child.out_features != num_classes:
                    new = self._linear(child, config)
                elif config.include_conv and isinstance(child, nn.Conv2d) and child.groups == 1:
                    new = self._conv(child, config)
                if new is not None:
                    setattr(parent, child_name, new)
                    replaced += 1
        if replaced == 0:
            raise PassError(
                self.name, f"no layer with min(in, out) >= {config.min_features} gains from factorising"
            )
        ctx.notes["lowrank"] = {"layers_factorised": replaced}
        log.info("factorised %d layers", replaced)
        return ModelState(torch_module=module.eval())

    @staticmethod
    def _rank(n_in: int, n_out: int, config: LowRankConfig) -> int | None:
        if min(n_in, n_out) < config.min_features:
            return None
        rank = max(1, math.ceil(config.rank_ratio * min(n_in, n_out)))
        return rank if rank * (n_in + n_out) < n_in * n_out else None

    def _linear(self, layer: Any, config: LowRankConfig) -> Any:
        import torch
        from torch import nn

        rank = self._rank(layer.in_features, layer.out_features, config)
        if rank is None:
            return None
        a, b = _factor(layer.weight.detach(), rank)
        first = nn.Linear(layer.in_features, rank, bias=False)
        second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
        with torch.no_grad():
            first.weight.copy_(b)
            second.weight.copy_(a)
            if layer.bias is not None:
                second.bias.copy_(layer.bias)
        return nn.Sequential(first, second)

    def _conv(self, layer: Any, config: LowRankConfig) -> Any:
        import torch
        from torch import nn

        cout, cin, kh, kw = layer.weight.shape
        rank = self._rank(cin * kh * kw, cout, config)
        if rank is None:
            return None
        a, b = _factor(layer.weight.detach().reshape(cout, -1), rank)
        first = nn.Conv2d(
            cin,
            rank,
            (kh, kw),
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            bias=False,
        )
        second = nn.Conv2d(rank, cout, 1, bias=layer.bias is not None)
        with torch.no_grad():
            first.weight.copy_(b.reshape(rank, cin, kh, kw))
            second.weight.copy_(a.reshape(cout, rank, 1, 1))
            if layer.bias is not None and second.bias is not None:
                second.bias.copy_(layer.bias)
        return nn.Sequential(first, second)
