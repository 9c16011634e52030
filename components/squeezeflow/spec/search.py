"""The search block of the job spec: explicit recipes (ordered pass steps), the space the
multi-objective search may vary, and its budget. Recipes are validated against the registered passes."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from squeezeflow.spec.base import NAME_PATTERN, StrictModel


class PassStep(StrictModel):
    name: str = Field(description="Registered pass name, e.g. ort_static_int8.")
    params: dict[str, Any] = Field(default_factory=dict)


class Recipe(StrictModel):
    """An ordered list of passes: one candidate. Serialisable, so one orchestrator task can run it."""

    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    steps: list[PassStep] = Field(min_length=1)

    @model_validator(mode="after")
    def _passes_exist(self) -> Recipe:
        from squeezeflow.passes import validate_steps

        validate_steps(self.steps)
        return self

    @property
    def label(self) -> str:
        return self.name or "+".join(s.name for s in self.steps)

    def key(self) -> str:
        """Content hash of the recipe (name excluded): same passes and params, same key."""
        blob = json.dumps([s.model_dump(mode="json") for s in self.steps], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


Importance = Literal["magnitude", "taylor", "lamp"]
QuantizeChoice = Literal["none", "int8", "int8_accuracy_aware", "int4"]


def _default_importance() -> list[Importance]:
    return ["magnitude", "taylor"]


def _default_quantize() -> list[QuantizeChoice]:
    return ["none", "int8"]


class SearchSpace(StrictModel):
    """What the multi-objective search may vary for PyTorch models (pruning, distillation, int8)."""

    prune_ratio: tuple[float, float] = Field(
        default=(0.3, 0.9), description="Range of channel pruning ratios."
    )
    importance: list[Importance] = Field(default_factory=_default_importance, min_length=1)
    distill: list[bool] = Field(
        default_factory=lambda: [True, False],
        description="Fine-tune with/without KD (distilling from the baseline); the first is the opening "
        "trials' choice.",
    )
    quantize: list[QuantizeChoice] = Field(
        default_factory=_default_quantize, min_length=1, description="What follows pruning and fine-tuning."
    )
    int4_block_size: list[Literal[32, 64, 128]] | None = Field(
        default=None,
        min_length=1,
        description="Block sizes searched when a trial quantizes to int4 (token-id models: input channels "
        "sharing one scale; smaller is more accurate, larger smaller and faster); default 32, 64, 128.",
    )
    finetune_epochs: int = Field(
        default=6, ge=1, le=500, description="Recovery epochs of a candidate pruned by 50% or less."
    )
    max_recovery_scale: float = Field(
        default=3.0,
        ge=1.0,
        le=20.0,
        description="Stronger pruning gets longer recovery at the same training cost: a candidate pruned "
        "by ratio r fine-tunes for finetune_epochs x ((1 - 0.5) / (1 - r))^2 epochs (its MACs shrink by "
        "about that factor), capped at this multiple. 1 gives every candidate finetune_epochs.",
    )
    finetune_lr: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Peak recovery learning rate; default 3e-3 for float inputs (CNNs), 1e-4 for token-id "
        "inputs (pretrained transformers, which a CNN's rate would wreck).",
    )
    lowrank: bool = Field(default=False, description="Also try low-rank factorisation of large layers.")
    depth: bool = Field(
        default=False,
        description="Also search depth pruning: dropping whole blocks (residual blocks, transformer layers), "
        "ranked by their influence on the validation loss, before channel pruning and recovery.",
    )
    round_to: list[int] | None = Field(
        default=None,
        min_length=1,
        description="Channel multiples pruned widths are rounded to, searched (1: no rounding); default: "
        "the target profile's `channel_multiple` and its double.",
    )

    @field_validator("prune_ratio")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0.0 <= lo <= hi <= 0.95:
            raise ValueError(f"need 0 <= low <= high <= 0.95, got {list(v)}")
        return v


class AbandonSpec(StrictModel):
    """Early abandonment of a trial whose recovery training cannot bring it back within the gate's
    tolerance (`squeezeflow.recovery`). After every recovery epoch from ``after`` of the schedule on,
    the trial's best validation metric is compared with the gate's floor on validation (the baseline's
    validation metric less the allowed drop); the trial is abandoned when it is more than ``tolerances``
    allowed drops below that floor and even an optimistic end of its learning curve (``slack`` times
    the steepest climb to its best so far, kept up to the last epoch) stays that far below. An abandoned
    trial is recorded as abandoned (why, the epoch, the gap, the seconds saved), is not gated or
    benchmarked, and the study is told it was pruned. Judged on top-1 accuracy, so only for jobs whose
    metric is top1_accuracy."""

    enabled: bool = Field(default=True, description="Abandon trials whose recovery cannot recover.")
    after: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Judge from this fraction of the recovery schedule on (the one-cycle rate is at its "
        "peak early, when validation swings most), then after every epoch.",
    )
    tolerances: float = Field(
        default=5.0,
        ge=0.0,
        le=1000.0,
        description="Abandon only a trial more than this many allowed drops (tolerance.max_drop) below "
        "the floor, now and at the curve's optimistic end.",
    )
    slack: float = Field(
        default=2.0,
        ge=1.0,
        le=100.0,
        description="How much faster than its steepest climb so far the curve is allowed to climb for "
        "the rest of the schedule.",
    )
    stop_recovered: bool = Field(
        default=False,
        description="Also stop, from `after` of the schedule on, a trial whose best validation metric is "
        "back to the baseline's: its recovery is shorter, at the cost of what the remaining epochs would "
        "have added (margin for the gate's confidence bound on the held-out split, a smaller validation "
        "drop for the search). Off by default: the plateau early stop (finetune.patience, once the "
        "one-cycle rate has annealed) already ends a recovery that stopped gaining.",
    )


class SearchSpec(StrictModel):
    recipes: list[Recipe] | None = Field(
        default=None,
        description="Explicit recipes to try (in order); omitted: cheap int8 recipes first, then a "
        "multi-objective search over `space` when the model is a PyTorch module.",
    )
    space: SearchSpace = Field(default_factory=SearchSpace)
    max_trials: int = Field(default=8, ge=1, le=10_000, description="Candidates built at most.")
    rounds: int = Field(
        default=6,
        ge=0,
        le=200,
        description="Rounds of the adaptive search after round 0 (the cheap int8 candidates, or the "
        "explicit recipes). Each round asks the study for `parallel_trials` recipes and builds them side by "
        "side (Airflow: mapped tasks; Kubeflow: a ParallelFor; the CLI: one after another). Airflow DAGs "
        "and Kubeflow pipelines are unrolled to this many rounds when they are built.",
    )
    parallel_trials: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Recipes asked per search round, built in parallel by the orchestrators.",
    )
    max_seconds: float = Field(
        default=1800.0, gt=0, le=30 * 86400, description="Wall-clock budget of the search (at most 30 days)."
    )
    patience: int = Field(
        default=4, ge=1, le=1000, description="Stop when the Pareto front is unchanged this long."
    )
    skip_slower_than: float | None = Field(
        default=1.5,
        gt=1.0,
        le=1000,
        description="A built candidate measured this many times slower than the baseline on a local "
        "target profile can never be promoted and is not sent to the gate (its row keeps the "
        "measurement and says why); null sends every candidate to the gate.",
    )
    abandon: AbandonSpec = Field(
        default_factory=AbandonSpec,
        description="Early abandonment of trials whose recovery training cannot reach the gate "
        "(on by default; enabled: false trains every trial to its end).",
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=2**32 - 1,
        description="Seeds the search and training (NumPy's range: 0 to 2**32-1).",
    )
