"""The optimization engine: which recipes to build, in what order, and when to stop.

Cheap candidates come first (ONNX Runtime int8 variants: seconds each). Then, for PyTorch models,
a multi-objective search (Optuna's TPE sampler, seeded) over pruning ratio, importance criterion,
distillation and post-training quantization, minimising the validation-metric drop, the measured
p50 latency on the target profile and the model size. The search stops at the trial or time budget,
when the next trial would not fit in the time left, or when the Pareto front has not moved for
``patience`` trials. Every candidate is built, gated and benchmarked as it comes, so whatever the
search has found is kept and tracked even when the budget runs out.

Each candidate is a serialisable :class:`Recipe`: an orchestrator can plan recipes here and run
each one in its own task with the same stage functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from squeezeflow.recipes import TEXT_INT8, TRIM, default_recipes
from squeezeflow.results import (
    BaselineResult,
    BenchmarkResult,
    CandidateOutcome,
    CandidateResult,
    IngestResult,
)
from squeezeflow.spec import JobSpec, PassStep, Recipe, SearchSpace
from squeezeflow.stages import StageContext, benchmark, gate, optimize
from squeezeflow.stages.benchmark import candidate_profiles, note_reference_skip
from squeezeflow.stages.gate import mark_candidate, not_evaluated

log = logging.getLogger(__name__)

Objectives = tuple[float, float, float]


def recovery_epochs(ratio: float, space: SearchSpace) -> int:
    """Recovery epochs for a candidate pruned by ``ratio``.

    Channel pruning by ``r`` leaves about ``(1 - r)^2`` of the MACs, so an epoch of the pruned model
    costs that much less to train, and strongly pruned models need more epochs to recover (measured on
    the ResNet-18 reference: pruned by 80% it was back to the baseline's test accuracy after 11-12
    epochs, not 6; by 82%, 97.9% against 97.7% after 18).
    The engine spends the same training compute as ``finetune_epochs`` epochs at 50% pruning, capped
    at ``max_recovery_scale`` times ``finetune_epochs``.
    """
    base = space.finetune_epochs
    if ratio <= 0.5:
        return base
    scale = min(space.max_recovery_scale, (0.5 / (1.0 - ratio)) ** 2)
    return max(base, round(base * scale))


def recipe_from_params(params: dict[str, Any], space: SearchSpace, token_ids: bool = False) -> Recipe:
    """The recipe a search trial's parameters describe. For a token-id (text) model every recipe starts
    with vocabulary pruning, trims padding after recovery, and int8 is ONNX Runtime's dynamic
    quantization."""
    steps = []
    label = []
    if token_ids:
        steps.append(PassStep(name="vocab_prune"))
        label.append("vocab")
    if params.get("lowrank_ratio"):
        steps.append(PassStep(name="lowrank_svd", params={"rank_ratio": params["lowrank_ratio"]}))
        label.append(f"lowrank{params['lowrank_ratio']:.2f}")
    ratio = round(float(params["prune_ratio"]), 2)
    if ratio > 0:
        steps.append(
            PassStep(name="structured_prune", params={"ratio": ratio, "importance": params["importance"]})
        )
        label.append(f"prune{int(ratio * 100)}-{params['importance']}")
    steps.append(
        PassStep(
            name="finetune",
            params={
                "epochs": recovery_epochs(ratio, space),
                "lr": space.finetune_lr or (1e-4 if token_ids else 3e-3),
                "distill": bool(params["distill"]),
                **({"trim_padding": True} if token_ids else {}),
                # dynamic int8 follows: train under it (quantization-aware), see training.fake_int8_dynamic
                **({"quant_aware": True} if token_ids and params["quantize"] != "none" else {}),
            },
        )
    )
    label.append("kd" if params["distill"] else "ft")
    if token_ids:
        steps.append(TRIM)
        label.append("trim")
    if params["quantize"] in ("int8", "int8_accuracy_aware") and token_ids:
        steps.append(TEXT_INT8)
        label.append("int8dyn")
    elif params["quantize"] == "int8":
        steps.append(
            PassStep(name="ort_static_int8", params={"activation_type": "quint8", "weight_type": "qint8"})
        )
        label.append("int8")
    elif params["quantize"] == "int8_accuracy_aware":
        steps.append(PassStep(name="ort_static_int8_accuracy_aware"))
        label.append("int8aa")
    return Recipe(name="-".join(label), steps=steps)


def objectives(outcome: CandidateOutcome, baseline: BaselineResult, profile: str) -> Objectives | None:
    """(validation-metric drop, p50 ms on the target profile, size in bytes): all minimised."""
    c = outcome.candidate
    bench = next((b for b in outcome.benchmarks if b.profile == profile), None)
    if c.status != "ok" or c.val_metric is None or bench is None or c.measure is None:
        return None
    return (baseline.val_metric - c.val_metric, bench.p50_ms, float(c.measure.size_bytes))


def first_trials(space: SearchSpace) -> list[dict[str, Any]]:
    """Two known-sensible first trials that bracket the front: the strongest pruning first (the smallest
    model is also the cheapest to fine-tune, and the one that can reach large size and latency gains),
    then moderate pruning; both with the space's first importance and distillation choices, then int8
    when the space allows it (whatever order the space lists its quantize choices in)."""
    lo, hi = space.prune_ratio
    quantize = "int8" if "int8" in space.quantize else space.quantize[-1]
    ratios = dict.fromkeys([round(hi - 0.05 if hi - lo >= 0.1 else hi, 2), round((lo + hi) / 2, 2)])
    return [
        {
            "prune_ratio": ratio,
            "importance": space.importance[0],
            "distill": space.distill[0],
            "quantize": quantize,
        }
        for ratio in ratios
    ]


def pareto_front(points: dict[str, Objectives]) -> set[str]:
    """Keys of the points no other point dominates."""

    def dominates(a: Objectives, b: Objectives) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    return {k for k, v in points.items() if not any(dominates(w, v) for j, w in points.items() if j != k)}


class Engine:
    """Builds, gates and benchmarks candidates for one job, within the spec's search budget."""

    def __init__(
        self,
        spec: JobSpec,
        ingest: IngestResult,
        baseline: BaselineResult,
        ctx: StageContext,
        on_candidate: Callable[[CandidateOutcome], None] | None = None,
    ) -> None:
        self.spec, self.ingest, self.baseline, self.ctx = spec, ingest, baseline, ctx
        self.on_candidate = on_candidate
        self.outcomes: list[CandidateOutcome] = []
        self.skipped: list[str] = []
        self.t0 = time.monotonic()
        self._durations: list[float] = []

    # -- budget -------------------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def _can_start(self, label: str, expensive: bool) -> bool:
        s = self.spec.search
        if len(self.outcomes) >= s.max_trials:
            self.skipped.append(f"{label} (trial budget)")
            return False
        remaining = s.max_seconds - self.elapsed
        expected = max(self._durations) if expensive and self._durations else 0.0
        if remaining <= 0 or expected > remaining:
            self.skipped.append(f"{label} (time budget: {remaining:.0f}s left)")
            return False
        return True

    # -- one candidate ------------------------------------------------------------------------------
    def evaluate(self, recipe: Recipe) -> CandidateOutcome:
        """optimize -> gate -> benchmark on every profile, for one recipe."""
        t = time.monotonic()
        shape = self.ingest.dataset.input_shape
        cand = optimize(self.spec, self.ingest, self.baseline, recipe, self.ctx)
        slow = self._slower_than_baseline(cand)
        if slow is not None:
            # It can never be promoted, so its held-out evaluation would be time spent for nothing.
            bench, why = slow
            log.info("%s: %s", cand.label, why)
            verdict = not_evaluated(self.spec, self.ingest, self.baseline, cand, why)
            outcome = CandidateOutcome(candidate=cand, gate=verdict, benchmarks=[bench])
            self.ctx.tracker.log(
                cand.run_id,
                tags={"squeezeflow.gate": "failed", "squeezeflow.gate_reason": why, "gate.skipped": why},
            )
            self.ctx.tracker.finish(cand.run_id)
            mark_candidate(self.ctx, self.baseline, cand, None, "failed")
            return self._record(outcome, t)
        verdict = gate(self.spec, self.ingest, self.baseline, cand, self.ctx)
        benches: list[BenchmarkResult] = []
        if cand.status == "ok" and cand.onnx is not None:
            benches = [
                benchmark(cand.onnx, shape, p, self.ctx, run_id=cand.run_id, model_id=cand.model_id)
                for p in candidate_profiles(self.spec.devices)
            ]
            note_reference_skip(self.ctx, self.spec.devices, cand.run_id)
            self.ctx.tracker.finish(cand.run_id)
        return self._record(CandidateOutcome(candidate=cand, gate=verdict, benchmarks=benches), t)

    def _record(self, outcome: CandidateOutcome, started: float) -> CandidateOutcome:
        self.outcomes.append(outcome)
        self._durations.append(time.monotonic() - started)
        if self.on_candidate is not None:
            self.on_candidate(outcome)
        return outcome

    def _slower_than_baseline(self, cand: CandidateResult) -> tuple[BenchmarkResult, str] | None:
        """Latency first: a built candidate measured slower than the baseline on a local target profile
        (``search.skip_slower_than`` times, so noise never decides) is reported with its measurement and not
        evaluated further. Dynamic int8 on a CNN is the usual case: ONNX Runtime's ConvInteger runs
        several times slower than float convolution on x86 CPUs."""
        target, margin = self.spec.target, self.spec.search.skip_slower_than
        if margin is None or cand.status != "ok" or cand.onnx is None:
            return None
        if target.remote or target.runtime != "onnxruntime":
            return None
        shape = self.ingest.dataset.input_shape
        base = benchmark(self.baseline.onnx, shape, target, self.ctx)
        bench = benchmark(cand.onnx, shape, target, self.ctx, run_id=cand.run_id, model_id=cand.model_id)
        if bench.p50_ms <= base.p50_ms * margin:
            return None
        return bench, (
            f"not evaluated: slower than the baseline on {target.name} ({bench.p50_ms / base.p50_ms:.2f}x: "
            f"p50 {bench.p50_ms:.3f} ms vs {base.p50_ms:.3f} ms, over search.skip_slower_than {margin:g}), "
            "so it can never be promoted"
        )

    # -- the search ---------------------------------------------------------------------------------
    def run(self) -> list[CandidateOutcome]:
        """Build candidates until the budget ends. A job that already searched replays the recipes it
        tried (every stage result is recorded), so a retry never grows or changes the candidate set."""
        recorded = self.ctx.store.read_record("search", self.ingest.job_key)
        if recorded is not None:
            for r in recorded["recipes"]:
                self.evaluate(Recipe.model_validate(r))
            return self.outcomes
        self._search()
        self.ctx.store.write_record(
            "search",
            self.ingest.job_key,
            {
                "recipes": [o.candidate.recipe.model_dump(mode="json") for o in self.outcomes],
                "skipped": self.skipped,
            },
        )
        return self.outcomes

    def _search(self) -> None:
        s = self.spec.search
        if s.recipes:
            for recipe in s.recipes:
                if self._can_start(recipe.label, expensive=False):
                    self.evaluate(recipe)
            return
        for recipe in default_recipes(
            self.ingest.dataset.input_dtype, torch_module=self.spec.model.format == "state_dict"
        ):
            if self._can_start(recipe.label, expensive=False):
                self.evaluate(recipe)
        if self.spec.model.format == "state_dict":
            self._search_torch()
        else:
            log.info(
                "model format %s: structured search needs a PyTorch module; int8 recipes only",
                self.spec.model.format,
            )
        if self.skipped:
            log.warning("not tried: %s", "; ".join(self.skipped))

    def _search_torch(self) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        s, space = self.spec.search, self.spec.search.space
        sampler = optuna.samplers.TPESampler(seed=s.seed, multivariate=True, n_startup_trials=3)
        study = optuna.create_study(directions=["minimize", "minimize", "minimize"], sampler=sampler)
        for first in first_trials(space):
            study.enqueue_trial(first)
        profile = self.spec.target.name
        seen: dict[str, Objectives | None] = {}
        front: set[str] = set()
        unchanged = 0
        while True:
            trial = study.ask()
            params: dict[str, Any] = {
                "prune_ratio": trial.suggest_float("prune_ratio", *space.prune_ratio, step=0.05),
                "importance": trial.suggest_categorical("importance", space.importance),
                "distill": trial.suggest_categorical("distill", space.distill),
                "quantize": trial.suggest_categorical("quantize", space.quantize),
            }
            if space.lowrank:
                params["lowrank_ratio"] = trial.suggest_categorical("lowrank_ratio", [0.0, 0.25, 0.5])
            recipe = recipe_from_params(params, space, token_ids=self.ingest.dataset.input_dtype == "int64")
            key = recipe.key()
            if key in seen:  # the sampler proposed a recipe already built: tell it the known result
                values = seen[key]
                study.tell(
                    trial,
                    list(values) if values else None,
                    state=None if values else optuna.trial.TrialState.FAIL,
                )
                continue
            if not self._can_start(recipe.label, expensive=True):
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                break
            outcome = self.evaluate(recipe)
            values = objectives(outcome, self.baseline, profile)
            seen[key] = values
            if values is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, list(values))
            points = {k: v for k, v in seen.items() if v is not None}
            new_front = pareto_front(points)
            unchanged = unchanged + 1 if new_front == front else 0
            front = new_front
            if unchanged >= s.patience:
                log.info("Pareto front unchanged for %d trials: stopping the search", unchanged)
                break
