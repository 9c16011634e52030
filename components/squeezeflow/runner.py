"""The whole job in one process: ingest -> baseline -> optimize -> gate -> benchmark -> promote.

This is what ``squeezeflow run`` calls. Orchestrators call the same stage functions one task at a
time instead; nothing here is needed by them.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Mapping
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow.errors import InfrastructureError
from squeezeflow.progress import terminal_progress
from squeezeflow.results import (
    BaselineResult,
    BenchmarkResult,
    CandidateOutcome,
    CandidateRow,
    DeviceRow,
    IngestResult,
    JobResult,
    PromotionResult,
)
from squeezeflow.search.engine import Engine
from squeezeflow.search.policy import verdict_of
from squeezeflow.search.rounds import RoundPlan, rounds_of
from squeezeflow.spec.job import JobSpec
from squeezeflow.stages import Settings, StageContext, baseline, ingest, promote
from squeezeflow.stages.benchmark import budget_violations, check_measurable_here, measure_baseline
from squeezeflow.stages.optimize import training_setup
from squeezeflow.stages.promote import eligibility, speed_of, target_benchmark
from squeezeflow.tracking.client import redact_uri
from squeezeflow.tracking.lease import job_lease

if TYPE_CHECKING:
    from squeezeflow.report import PublishedReport

log = logging.getLogger(__name__)


def _progress(enabled: bool) -> Any:
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    return terminal_progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        stderr=True,
    )


def run_job(
    spec: JobSpec, settings: Settings, progress: bool = True, report_to: Path | None = None
) -> JobResult:
    """Run every stage of ``spec`` and return the job's result. Re-running the same job reuses every
    recorded stage result: no duplicate runs, candidates or model versions. A job that fails once its
    MLflow run is open leaves that run FAILED (`end_job_run_failed`); a rerun that succeeds finishes it.
    ``report_to``: also write the job's HTML report there (a stable name beside the job's result; the
    stored one is named by its content)."""
    t0 = time.monotonic()
    check_measurable_here(spec.devices)  # a profile this machine cannot measure fails before any work
    training_setup(spec)  # so does training.device cuda without a GPU
    ctx = StageContext.open(settings, spec.name)
    job_run: list[str] = []  # the job's MLflow run, once ingest has opened it
    try:
        return _run_stages(spec, settings, ctx, progress, t0, job_run, report_to)
    except Exception as err:
        if job_run:
            end_job_run_failed(ctx, job_run[0], err)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file beside it, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def end_job_run_failed(ctx: StageContext, run_id: str, err: Exception) -> None:
    """Mark the job's MLflow run FAILED, with the error as its ``squeezeflow.error`` tag, so that MLflow
    never shows a job that ended in an error as running. Best effort, and MLflow is not asked again
    when it is what failed: the job's own error is what the user must see, and soon."""
    if isinstance(err, InfrastructureError) and str(err).startswith("MLflow at "):  # Tracker's outage
        return
    try:
        ctx.tracker.log(run_id, tags={"squeezeflow.error": f"{type(err).__name__}: {err}"[:5000]})
        ctx.tracker.finish(run_id, "FAILED")
    except Exception as failed:
        log.warning("could not mark the job's MLflow run %s FAILED: %s", run_id, failed)


def _run_stages(
    spec: JobSpec,
    settings: Settings,
    ctx: StageContext,
    progress: bool,
    t0: float,
    job_run: list[str],
    report_to: Path | None = None,
) -> JobResult:
    with _progress(progress) as bar, ExitStack() as held:
        # ingest, baseline, every candidate built (the total grows as the search plans rounds), promote
        task = bar.add_task("ingest", total=3) if bar else None

        def step(desc: str) -> None:
            if bar is not None and task is not None:
                bar.update(task, advance=1, description=desc)

        def planned(plan: RoundPlan) -> None:
            if bar is not None and task is not None and plan.trials:
                total = next(t.total for t in bar.tasks if t.id == task) or 0
                bar.update(task, total=total + len(plan.trials))
                bar.update(task, description=f"round {plan.round}: {len(plan.trials)} candidates")

        ing = ingest(spec, ctx)
        job_run.append(ing.parent_run_id)
        # One process at a time per job: another one running the same job is waited for, and then its
        # records are reused (squeezeflow.tracking.lease).
        held.enter_context(job_lease(ctx.tracker, ing.parent_run_id))
        step("baseline")
        base = baseline(spec, ing, ctx)
        base_benches = {p.name: measure_baseline(spec, ing, base, p, ctx) for p in spec.devices}
        step("search")
        engine = Engine(
            spec, ing, base, ctx, on_candidate=lambda o: step(f"built {o.candidate.label}"), on_round=planned
        )
        outcomes = engine.run()
        if bar is not None and task is not None:
            bar.update(task, total=len(outcomes) + 3, completed=len(outcomes) + 2, description="promote")
        target = base_benches[spec.target.name]
        promotion = promote(spec, ing, base, target, outcomes, ctx)
        step("done")
        result, report = job_result_and_report(
            spec, settings, ctx, ing, base, target, outcomes, promotion, time.monotonic() - t0, base_benches
        )
        if report_to is not None and report is not None:
            write_text_atomic(report_to, report.html)
        return result


def device_rows(
    baseline_benchmarks: Mapping[str, BenchmarkResult], outcomes: list[CandidateOutcome]
) -> list[DeviceRow]:
    """The baseline, then each measured candidate, on each profile (in the order measured, which is the
    spec's), with the budgets each measurement breaks."""
    rows = [
        DeviceRow(
            model="baseline",
            profile=b.profile,
            benchmark=b,
            budget_violations=budget_violations(b.budgets, b),
        )
        for b in baseline_benchmarks.values()
    ]
    for o in outcomes:
        rows += [
            DeviceRow(
                model=o.candidate.label,
                candidate_key=o.candidate.key,
                profile=b.profile,
                benchmark=b,
                budget_violations=budget_violations(b.budgets, b),
            )
            for b in o.benchmarks
        ]
    return rows


def job_result(
    spec: JobSpec,
    settings: Settings,
    ctx: StageContext,
    ing: IngestResult,
    base: BaselineResult,
    target: BenchmarkResult,
    outcomes: list[CandidateOutcome],
    promotion: PromotionResult,
    seconds: float,
    baseline_benchmarks: Mapping[str, BenchmarkResult] | None = None,
) -> JobResult:
    """The job's result: one summary row per candidate, the device table (the baseline on every profile
    in ``baseline_benchmarks``, and every measured candidate), the promotion and where everything is
    tracked. Its report is published (`job_result_and_report`)."""
    return job_result_and_report(
        spec, settings, ctx, ing, base, target, outcomes, promotion, seconds, baseline_benchmarks
    )[0]


def job_result_and_report(
    spec: JobSpec,
    settings: Settings,
    ctx: StageContext,
    ing: IngestResult,
    base: BaselineResult,
    target: BenchmarkResult,
    outcomes: list[CandidateOutcome],
    promotion: PromotionResult,
    seconds: float,
    baseline_benchmarks: Mapping[str, BenchmarkResult] | None = None,
) -> tuple[JobResult, PublishedReport | None]:
    """`job_result`, and the report it published (None when rendering it failed), so a front door that
    shows the report has its text without reading it back from the store."""
    rows = []
    for o in outcomes:
        ok, why = eligibility(o, base, target, ing)
        b = target_benchmark(o, spec.target.name)
        c = o.candidate
        speed = speed_of(b, target, base) if b is not None else None
        paired = speed if speed is not None and speed.paired else None
        rows.append(
            CandidateRow(
                label=c.label,
                candidate_key=c.key,
                status=c.status,
                error=c.error,
                metric=o.gate.candidate_metric,
                delta=None if o.gate.drop is None else -o.gate.drop,
                size_bytes=c.measure.size_bytes if c.measure else None,
                p50_ms=b.p50_ms if b else None,
                p95_ms=b.p95_ms if b else None,
                speedup=paired.ratio if paired else None,
                speedup_low=paired.low if paired else None,
                speedup_high=paired.high if paired else None,
                gate=verdict_of(o),
                eligible=ok,
                note="promoted" if promotion.candidate_key == c.key else why,
                run_id=c.run_id,
                model_id=c.model_id,
            )
        )
    from squeezeflow.search.rounds import read_plans

    plans = read_plans(ing, ctx)
    stop = next((p.stop for p in plans if p.stop), None)
    if stop is None and plans and len(plans) >= rounds_of(spec):
        stop = f"all {len(plans)} rounds ran (search.rounds {spec.search.rounds})"
    result = JobResult(
        job=spec.name,
        job_key=ing.job_key,
        metric_name=base.metric_name,
        baseline_metric=base.metric,
        baseline_size_bytes=base.measure.size_bytes,
        baseline_p50_ms=target.p50_ms,
        baseline_p95_ms=target.p95_ms,
        target_profile=spec.target.name,
        candidates=rows,
        promotion=promotion,
        tracking_uri=redact_uri(settings.tracking_uri),
        artifacts=ctx.store.root,
        parent_run_id=ing.parent_run_id,
        experiment_id=ctx.tracker.experiment_id,
        seconds=seconds,
        devices=device_rows(baseline_benchmarks or {}, outcomes),
        search_rounds=len(plans),
        search_stop=stop,
    )
    # The report is a view of the result: a rendering bug must not lose the job, so it is logged and
    # the report fields stay empty. Failing to store it is an infrastructure error like any other
    # store write, and propagates (the orchestrator retries the task).
    from squeezeflow.errors import InfrastructureError
    from squeezeflow.report import publish_report

    try:
        report = publish_report(result, outcomes, ctx.store, ctx.workdir)
    except InfrastructureError:
        raise
    except Exception:
        log.warning("could not render the job report for %s; continuing without it", spec.name, exc_info=True)
        return result, None
    # Also on the job's MLflow run, where the MLflow UI shows it (artifacts tab, report/report.html).
    ctx.tracker.log_text(ing.parent_run_id, report.html, "report/report.html")
    linked = {"report_html": report.html_ref.uri, "report_markdown": report.markdown_ref.uri}
    return result.model_copy(update=linked), report
