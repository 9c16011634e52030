"""The search as rounds of ask and tell, with its state as records in the artifact store.

* ``plan_round(k)`` (ask): round 0 is the cheap candidates; round k >= 1 rebuilds the Optuna study from
  the trial records of rounds 0..k-1 (``study.add_trial`` of each told result, in plan order), seeds its
  sampler with the spec's seed and k, and asks it for ``search.parallel_trials`` recipes (constant liar,
  so one round's asks differ). The plan is recorded under the job and round: a retried plan task, or the
  CLI resuming a killed job, gets the same plan.
* ``record_trial`` (tell): the candidate policy records each finished trial with its objectives; one
  abandoned during recovery (search.abandon) is told to the study as pruned (`told_state`).
* ``trial_deadline``: when a searched trial's training must end for the search to keep ``max_seconds``
  (the passes size their schedules to it).
* ``search_outcomes``: every recorded trial of every planned round, in plan order (what promotion and
  the report see, whichever door ran the search).

A round plans nothing, and says why, when the trial budget (``max_trials``) is spent, the time budget
(``max_seconds``, counted from round 0's plan) is spent or would be by one more round of the longest
trial so far or leaves too little to train and check a candidate, the Pareto front has not moved for
``patience`` searched trials, or there is nothing to search (explicit recipes, or a baseline that is not
a PyTorch module).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from squeezeflow.gate.verdicts import is_not_evaluated
from squeezeflow.results import BaselineResult, CandidateOutcome, IngestResult, content_key
from squeezeflow.search.recipes import plan_recipes
from squeezeflow.search.space import (
    Objectives,
    asked_distributions,
    distributions,
    first_trials,
    pareto_front,
    recipe_from_params,
    search_space,
    suggest,
)
from squeezeflow.spec.job import JobSpec
from squeezeflow.spec.search import Recipe
from squeezeflow.stages import StageContext

log = logging.getLogger(__name__)

PLAN_STAGE = "search-round"
TRIAL_STAGE = "search-trial"
# How many times a round asks again when the sampler proposes a recipe already built.
_MAX_ASKS_PER_TRIAL = 20


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlannedTrial(_Record):
    recipe: Recipe
    params: dict[str, Any] | None = Field(
        default=None, description="The study's parameters for a searched trial; None for round 0's."
    )


class RoundPlan(_Record):
    job_key: str
    round: int
    trials: list[PlannedTrial]
    started: float = Field(description="When the search started (round 0's plan), epoch seconds.")
    stop: str | None = Field(default=None, description="Why the search plans no more trials, if it does not.")

    @property
    def recipes(self) -> list[Recipe]:
        return [t.recipe for t in self.trials]


class TrialRecord(_Record):
    recipe: Recipe
    outcome: CandidateOutcome
    objectives: list[float] | None = Field(
        description="What the study is told (validation drop, MACs, bytes); None: the trial failed, or "
        "was abandoned (its outcome's candidate status says which; the study is told it was pruned)."
    )
    seconds: float


def plan_key(job_key: str, index: int) -> str:
    return content_key(PLAN_STAGE, job_key, str(index))


def trial_key(job_key: str, recipe: Recipe) -> str:
    return content_key(TRIAL_STAGE, job_key, recipe.key())


def rounds_of(job: JobSpec) -> int:
    """How many rounds a door plans at most: round 0 and ``search.rounds`` searched ones; round 0 alone
    when there is nothing to search (the spec lists its recipes, or the baseline is not a PyTorch
    module), so a DAG or pipeline built from such a spec has one round."""
    if job.search.recipes or not job.model.is_module:
        return 1
    return 1 + job.search.rounds


def objectives_of(outcome: CandidateOutcome, baseline: BaselineResult) -> Objectives | None:
    """(validation drop rounded to 1e-4, MACs, bytes), all minimised; None for a candidate that was not
    built: the study is told it failed. All three are properties of the built model, so a candidate the
    policy skipped for being slower is told them too: what a latency measurement decided must not change
    what the study proposes next (it would differ between two runs of the same search). The rounding keeps
    a last-digit difference in a validation metric from doing so either."""
    c = outcome.candidate
    if c.status != "ok" or c.val_metric is None or c.measure is None:
        return None
    return (round(baseline.val_metric - c.val_metric, 4), float(c.measure.macs), float(c.measure.size_bytes))


def record_trial(
    job: JobSpec,
    ingest: IngestResult,
    baseline: BaselineResult,
    outcome: CandidateOutcome,
    ctx: StageContext,
    seconds: float | None = None,
) -> TrialRecord:
    """Tell: record a finished trial (idempotent: a recorded trial is returned as it was)."""
    recipe = outcome.candidate.recipe
    key = trial_key(ingest.job_key, recipe)
    recorded = ctx.store.read_record(TRIAL_STAGE, key)
    if recorded is not None:
        return TrialRecord.model_validate(recorded)
    values = objectives_of(outcome, baseline)
    record = TrialRecord(
        recipe=recipe,
        outcome=outcome,
        objectives=list(values) if values is not None else None,
        seconds=float(seconds if seconds is not None else outcome.candidate.seconds),
    )
    ctx.store.write_record(TRIAL_STAGE, key, record)
    return record


def read_trial(ingest: IngestResult, recipe: Recipe, ctx: StageContext) -> TrialRecord | None:
    recorded = ctx.store.read_record(TRIAL_STAGE, trial_key(ingest.job_key, recipe))
    return TrialRecord.model_validate(recorded) if recorded is not None else None


def read_plans(ingest: IngestResult, ctx: StageContext, before: int | None = None) -> list[RoundPlan]:
    """The recorded plans of rounds 0, 1, ... (up to ``before``, exclusive), stopping at the first missing."""
    plans: list[RoundPlan] = []
    index = 0
    while before is None or index < before:
        recorded = ctx.store.read_record(PLAN_STAGE, plan_key(ingest.job_key, index))
        if recorded is None:
            break
        plans.append(RoundPlan.model_validate(recorded))
        index += 1
    return plans


# What checking a candidate after its training takes (export, int8, gate, benchmarks) when no round-0
# trial has been measured yet; and the least share of search.max_seconds a trial's training gets when it
# starts late (a retried task, a resumed job), so it is not built with no training at all.
_DEFAULT_CHECK_SECONDS = 30.0
_MIN_TRAINING_SHARE = 0.1


def check_seconds(ingest: IngestResult, ctx: StageContext, round0: RoundPlan) -> float:
    """What checking a candidate takes once it is trained: the longest round-0 trial of this job that
    went through the gate (int8 quantization, the gate and the benchmarks, no training), as measured. One
    skipped as slower is left out: its time is the measurement of a slow model, which a candidate in the
    running never gets (every round-0 trial counts when none went through the gate)."""
    return _longest_check([r for t in round0.trials if (r := read_trial(ingest, t.recipe, ctx)) is not None])


def _longest_check(round0: list[TrialRecord]) -> float:
    """`check_seconds` of round 0's recorded trials."""
    gated = [r for r in round0 if not is_not_evaluated(r.outcome.gate)] or round0
    return max((r.seconds for r in gated), default=_DEFAULT_CHECK_SECONDS)


def trial_deadline(
    job: JobSpec, ingest: IngestResult, ctx: StageContext, trials_in_turn: int = 1
) -> float | None:
    """When a searched trial's training must end (epoch seconds) so the search keeps its time budget:
    ``search.max_seconds`` after round 0 was planned, less what checking the candidate takes
    (`check_seconds`). ``trials_in_turn``: how many trials, this one first, share the time left one after
    another (the CLI runs a round's trials in turn; Airflow and Kubeflow run them side by side, 1). A trial
    that starts too late still gets a tenth of the budget. None before the search has started."""
    plans = read_plans(ingest, ctx, before=1)
    if not plans:
        return None
    now = time.time()
    end = plans[0].started + job.search.max_seconds
    share = (end - now) / max(1, trials_in_turn)
    at_least = now + _MIN_TRAINING_SHARE * job.search.max_seconds
    return max(now + share - check_seconds(ingest, ctx, plans[0]), at_least)


def search_outcomes(ingest: IngestResult, ctx: StageContext) -> list[CandidateOutcome]:
    """The outcome of every recorded trial of every planned round, in plan order (a planned trial whose
    record is missing, because its task failed or never ran, is left out)."""
    outcomes = []
    for plan in read_plans(ingest, ctx):
        for planned in plan.trials:
            trial = read_trial(ingest, planned.recipe, ctx)
            if trial is not None:
                outcomes.append(trial.outcome)
    return outcomes


def plan_round(job: JobSpec, ingest: IngestResult, index: int, ctx: StageContext) -> RoundPlan:
    """Ask: the recipes of round ``index`` (recorded; a recorded plan is returned as it was)."""
    key = plan_key(ingest.job_key, index)
    recorded = ctx.store.read_record(PLAN_STAGE, key)
    if recorded is not None:
        return RoundPlan.model_validate(recorded)
    if index == 0:
        recipes = plan_recipes(job, ingest.dataset.input_dtype)
        plan = RoundPlan(
            job_key=ingest.job_key,
            round=0,
            trials=[PlannedTrial(recipe=r) for r in recipes],
            started=time.time(),
        )
    else:
        earlier = read_plans(ingest, ctx, before=index)
        if len(earlier) != index:
            raise RuntimeError(f"round {index} of job {ingest.job_key} planned before round {len(earlier)}")
        plan = _ask(job, ingest, index, earlier, ctx)
    if plan.stop:
        log.info("search round %d: %s", index, plan.stop)
    ctx.store.write_record(PLAN_STAGE, key, plan)
    return plan


def _stopped(index: int, earlier: list[RoundPlan], reason: str) -> RoundPlan:
    return RoundPlan(
        job_key=earlier[0].job_key, round=index, trials=[], started=earlier[0].started, stop=reason
    )


def _ask(
    job: JobSpec, ingest: IngestResult, index: int, earlier: list[RoundPlan], ctx: StageContext
) -> RoundPlan:
    s, space = job.search, search_space(job)
    if earlier[-1].stop:
        return _stopped(index, earlier, earlier[-1].stop)
    if s.recipes:
        return _stopped(index, earlier, "the spec lists its recipes: nothing to search")
    if not job.model.is_module:
        return _stopped(
            index, earlier, f"the baseline is {job.model.format}, not a PyTorch module: int8 recipes only"
        )
    planned = [t for plan in earlier for t in plan.trials]
    remaining = s.max_trials - len(planned)
    if remaining <= 0:
        return _stopped(index, earlier, f"trial budget spent (search.max_trials {s.max_trials})")
    told = [(t, read_trial(ingest, t.recipe, ctx)) for t in planned]
    elapsed = time.time() - earlier[0].started
    left = s.max_seconds - elapsed
    searched_seconds = [r.seconds for t, r in told if t.params is not None and r is not None]
    longest = max(searched_seconds, default=0.0)
    check = _longest_check([r for t, r in told if t.params is None and r is not None])
    if left <= 0 or longest > left or left < 2 * check:
        why = (
            f", the longest trial took {longest:.0f} s"
            if longest > left
            else f", too little left to train and check a candidate ({check:.0f} s to check one)"
            if left > 0
            else ""
        )
        return _stopped(
            index,
            earlier,
            f"time budget spent (search.max_seconds {s.max_seconds:g}: {elapsed:.0f} s used{why})",
        )
    unchanged = _trials_since_front_moved([(t, r) for t, r in told if t.params is not None])
    if unchanged >= s.patience:
        return _stopped(index, earlier, f"the Pareto front has not moved for {unchanged} trials")

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(
        seed=(s.seed * 1009 + index) % 2**32, multivariate=True, n_startup_trials=3, constant_liar=True
    )
    study = optuna.create_study(directions=["minimize"] * 3, sampler=sampler)
    dists = distributions(space)
    seen: dict[str, tuple[list[float] | None, optuna.trial.TrialState]] = {}
    for t, r in told:
        values = r.objectives if r is not None else None
        state = told_state(r)
        seen[t.recipe.key()] = (values, state)
        if t.params is None:
            continue
        try:
            study.add_trial(
                optuna.trial.create_trial(
                    params=t.params,
                    distributions=asked_distributions(t.params, dists),
                    values=values,
                    state=state,
                )
            )
        except ValueError as err:  # a value outside a space the spec has since narrowed
            log.debug("not told to the study: %s (%s)", t.recipe.label, err)
    token_ids = ingest.dataset.input_dtype == "int64"
    for params in first_trials(space):
        if recipe_from_params(params, space, token_ids).key() not in seen:
            study.enqueue_trial(params)
    trials: list[PlannedTrial] = []
    asks = 0
    while len(trials) < min(s.parallel_trials, remaining) and asks < _MAX_ASKS_PER_TRIAL * s.parallel_trials:
        asks += 1
        trial = study.ask()
        params = suggest(trial, space)
        recipe = recipe_from_params(params, space, token_ids)
        rkey = recipe.key()
        if rkey in seen:  # proposed again: tell it what that recipe gave, and ask once more
            values, state = seen[rkey]
            study.tell(trial, values, state=None if values else state)
            continue
        seen[rkey] = (None, optuna.trial.TrialState.FAIL)
        trials.append(PlannedTrial(recipe=recipe, params=params))
    stop = None if trials else "the study proposes only recipes already built"
    return RoundPlan(
        job_key=ingest.job_key, round=index, trials=trials, started=earlier[0].started, stop=stop
    )


def told_state(record: TrialRecord | None) -> Any:
    """How the study is told a trial ended (an ``optuna.trial.TrialState``): COMPLETE with its
    objectives; PRUNED when its recovery was abandoned (search.abandon), so TPE counts the region among
    its worse trials rather than forgetting it, as it does a FAIL; FAIL when it was not built (or its
    record is missing)."""
    import optuna

    if record is not None and record.objectives is not None:
        return optuna.trial.TrialState.COMPLETE
    if record is not None and record.outcome.candidate.status == "abandoned":
        return optuna.trial.TrialState.PRUNED
    return optuna.trial.TrialState.FAIL


def _trials_since_front_moved(told: list[tuple[PlannedTrial, TrialRecord | None]]) -> int:
    """How many of the searched trials, counted from the last, left the Pareto front as it was."""
    points: dict[str, Objectives] = {}
    front: set[str] = set()
    unchanged = 0
    for planned, record in told:
        if record is not None and record.objectives is not None:
            a, b, c = record.objectives
            points[planned.recipe.key()] = (a, b, c)
        new_front = pareto_front(points)
        unchanged = unchanged + 1 if new_front == front else 0
        front = new_front
    return unchanged
