"""The candidate policy: what happens to one recipe, the same in every front door.

::

    build -> latency first (skip if slower) -> gate -> benchmark every profile (if it passed) -> record

A candidate whose recovery training was abandoned while it was built (``search.abandon``, decided inside
the build by `squeezeflow.recovery`, so in whichever worker builds it) comes out of ``build`` with status
"abandoned": like one that was not built, it gets a verdict without being gated, is not benchmarked,
and is recorded (the study is told it was pruned).

The CLI runs `run_trial` in process. Airflow and Kubeflow run the phases as separate tasks (building
needs CPU for minutes; the gate may wait on a device agent; benchmarks want quiet cores), each calling the
phase function here: `build` in the optimize task, `screen` then `judge` in the gate task, `measure` then
`finish` in the benchmark task, and `squeezeflow stage` calls those same tasks. So a rule about a candidate
(when to skip it, which profiles measure it, what a skipped one reports) is written once.

What each outcome is called, in every table: `verdict_of`.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

from squeezeflow.errors import DeviceUnavailableError
from squeezeflow.gate.verdicts import is_not_evaluated, not_evaluated
from squeezeflow.results import (
    ArtifactRef,
    BaselineResult,
    BenchmarkResult,
    CandidateOutcome,
    CandidateResult,
    GateResult,
    IngestResult,
)
from squeezeflow.search.rounds import record_trial, trial_deadline
from squeezeflow.spec.job import JobSpec
from squeezeflow.spec.search import Recipe
from squeezeflow.stages import StageContext, benchmark, gate, optimize
from squeezeflow.stages.benchmark import (
    RESULT_STAGE,
    agent_failure,
    candidate_profiles,
    note_reference_skip,
    submit_remote,
)
from squeezeflow.stages.gate import mark_candidate

log = logging.getLogger(__name__)

Verdict = Literal["pass", "fail", "not evaluated: slower", "not built", "abandoned"]


def verdict_of(outcome: CandidateOutcome) -> Verdict:
    """A candidate's verdict in the words every table uses (CLI, report, Airflow, Kubeflow)."""
    if outcome.candidate.status == "abandoned":
        return "abandoned"
    if outcome.candidate.status != "ok":
        return "not built"
    if outcome.gate is not None and is_not_evaluated(outcome.gate):
        return "not evaluated: slower"
    return "pass" if outcome.gate is not None and outcome.gate.passed else "fail"


def build(
    job: JobSpec,
    ingest: IngestResult,
    baseline: BaselineResult,
    recipe: Recipe,
    ctx: StageContext,
    trials_in_turn: int = 1,
) -> CandidateResult:
    """Build the candidate (idempotent: a recorded build is returned as is), its training ending in time
    for the search to keep ``search.max_seconds`` (`trial_deadline`; ``trials_in_turn``: how many trials,
    this one first, run one after another in the time left)."""
    deadline = trial_deadline(job, ingest, ctx, trials_in_turn)
    return optimize(job, ingest, baseline, recipe, ctx, deadline=deadline)


def screen(
    job: JobSpec, ingest: IngestResult, baseline: BaselineResult, cand: CandidateResult, ctx: StageContext
) -> CandidateOutcome | None:
    """Latency first: a built candidate measured ``search.skip_slower_than`` times slower than the baseline
    on a local target profile (so noise never decides) can never be promoted; it gets its measurement and
    a "not evaluated" verdict instead of the gate, and this returns its finished outcome. None: send it
    to the gate. Dynamic int8 on a CNN is the usual case: ONNX Runtime's ConvInteger runs several times
    slower than float convolution on x86 CPUs."""
    target, margin = job.target, job.search.skip_slower_than
    if margin is None or cand.status != "ok" or cand.onnx is None:
        return None
    if target.remote or target.runtime != "onnxruntime":
        return None
    shape = ingest.dataset.input_shape
    base = benchmark(baseline.onnx, shape, target, ctx)
    # Paired with the baseline, as `measure` will measure it (the same record: measured once), after a
    # short screening round that ends the measurement of a candidate already shown `margin` times slower.
    bench = benchmark(
        cand.onnx,
        shape,
        target,
        ctx,
        run_id=cand.run_id,
        model_id=cand.model_id,
        paired_with=baseline.onnx,
        screen_slower_than=margin,
    )
    if bench.p50_ms <= base.p50_ms * margin:
        return None
    why = (
        f"not evaluated: slower than the baseline on {target.name} ({bench.p50_ms / base.p50_ms:.2f}x: "
        f"p50 {bench.p50_ms:.3f} ms vs {base.p50_ms:.3f} ms, over search.skip_slower_than {margin:g}), "
        "so it can never be promoted"
    )
    log.info("%s: %s", cand.label, why)
    verdict = not_evaluated(job, ingest, baseline, cand, why)
    ctx.tracker.log(
        cand.run_id, tags={"squeezeflow.gate": "failed", "squeezeflow.gate_reason": why, "gate.skipped": why}
    )
    mark_candidate(ctx, baseline, cand, None, "failed")
    return CandidateOutcome(candidate=cand, gate=verdict, benchmarks=[bench])


def judge(
    job: JobSpec, ingest: IngestResult, baseline: BaselineResult, cand: CandidateResult, ctx: StageContext
) -> GateResult:
    """The accuracy gate's verdict (idempotent)."""
    return gate(job, ingest, baseline, cand, ctx)


def measure_on_profiles(
    job: JobSpec,
    ctx: StageContext,
    ref: object,
    shape: list[int],
    run_id: str | None,
    model_id: str | None,
    defer_remote: bool,
    ingest: IngestResult | None = None,
    baseline: ArtifactRef | None = None,
) -> tuple[dict[str, BenchmarkResult], dict[str, str]]:
    """Measure a model on every profile: local ones now; remote ones, when ``defer_remote``, only requested
    (their record keys are returned as pending, for the caller to wait on without blocking). With
    ``ingest``, ``ref`` is the baseline and pytorch_eager profiles measure its original PyTorch file;
    without, it is a candidate and those profiles are left out (noted on ``run_id``); with ``baseline``
    (the baseline's ONNX), a candidate is measured paired with it on local ONNX Runtime profiles."""
    assert isinstance(ref, ArtifactRef)
    done: dict[str, BenchmarkResult] = {}
    pending: dict[str, str] = {}
    if ingest is None:
        profiles = candidate_profiles(job.devices)
        note_reference_skip(ctx, job.devices, run_id)
    else:
        profiles = list(job.devices)
    for p in profiles:
        model, source = (
            (ingest.model_source, job.model) if ingest and p.runtime == "pytorch_eager" else (ref, None)
        )
        if p.remote and defer_remote:
            key = submit_remote(model, shape, p, ctx, job.name, run_id, model_id, source)
            recorded = ctx.store.read_record(RESULT_STAGE, key)
            failure = agent_failure(ctx, key) if recorded is None else None
            if failure is not None:
                raise DeviceUnavailableError(f"the device agent for profile {p.name!r} reported: {failure}")
            if recorded is None:
                pending[p.name] = key
            else:
                done[p.name] = BenchmarkResult.model_validate(recorded).model_copy(
                    update={"budgets": p.budgets}
                )
        else:
            done[p.name] = benchmark(
                model,
                shape,
                p,
                ctx,
                run_id=run_id,
                model_id=model_id,
                torch_source=source,
                paired_with=None if ingest else baseline,
            )
    return done, pending


def measure(
    job: JobSpec,
    ingest: IngestResult,
    cand: CandidateResult,
    verdict: GateResult,
    ctx: StageContext,
    defer_remote: bool = False,
    baseline: BaselineResult | None = None,
) -> tuple[list[BenchmarkResult], dict[str, str]]:
    """A candidate that passed the gate, measured on every profile (in the spec's order); one that did not
    is not measured (it cannot be promoted, so device time would be spent on nothing). Returns the
    benchmarks and, with ``defer_remote``, the remote profiles still pending (profile -> record key).
    With ``baseline``, local ONNX Runtime profiles measure the candidate paired with it."""
    if not verdict.passed or cand.status != "ok" or cand.onnx is None:
        return [], {}
    done, pending = measure_on_profiles(
        job,
        ctx,
        cand.onnx,
        ingest.dataset.input_shape,
        cand.run_id,
        cand.model_id,
        defer_remote,
        baseline=None if baseline is None else baseline.onnx,
    )
    return [done[p.name] for p in job.devices if p.name in done], pending


def finish(
    job: JobSpec,
    ingest: IngestResult,
    baseline: BaselineResult,
    outcome: CandidateOutcome,
    ctx: StageContext,
    seconds: float | None = None,
) -> CandidateOutcome:
    """End the candidate's MLflow run and record the trial (what the search is told). Idempotent."""
    if outcome.candidate.status == "ok" and outcome.candidate.run_id:
        ctx.tracker.finish(outcome.candidate.run_id)
    record_trial(job, ingest, baseline, outcome, ctx, seconds)
    return outcome


def run_trial(
    job: JobSpec,
    ingest: IngestResult,
    baseline: BaselineResult,
    recipe: Recipe,
    ctx: StageContext,
    trials_in_turn: int = 1,
) -> CandidateOutcome:
    """Every phase of the policy, in process (the CLI's way)."""
    started = time.monotonic()
    cand = build(job, ingest, baseline, recipe, ctx, trials_in_turn)
    skipped = screen(job, ingest, baseline, cand, ctx)
    if skipped is not None:
        return finish(job, ingest, baseline, skipped, ctx, time.monotonic() - started)
    verdict = judge(job, ingest, baseline, cand, ctx)
    benches, _ = measure(job, ingest, cand, verdict, ctx, baseline=baseline)
    outcome = CandidateOutcome(candidate=cand, gate=verdict, benchmarks=benches)
    return finish(job, ingest, baseline, outcome, ctx, time.monotonic() - started)
