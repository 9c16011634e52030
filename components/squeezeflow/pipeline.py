"""The whole job in one process: ingest -> baseline -> optimize -> gate -> benchmark -> promote.

This is what ``squeezeflow run`` calls. Orchestrators call the same stage functions one task at a
time instead; nothing here is needed by them.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from typing import Any

from squeezeflow.recipes import plan_recipes
from squeezeflow.results import CandidateOutcome, CandidateRow, JobResult
from squeezeflow.spec import JobSpec
from squeezeflow.stages import Settings, StageContext, baseline, benchmark, gate, ingest, optimize, promote
from squeezeflow.stages.promote import eligibility, target_benchmark

log = logging.getLogger(__name__)


def _progress(enabled: bool) -> Any:
    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )


def run_job(spec: JobSpec, settings: Settings, progress: bool = True) -> JobResult:
    """Run every stage of ``spec`` and return the job's result. Re-running the same job reuses every
    recorded stage result: no duplicate runs, candidates or model versions."""
    t0 = time.monotonic()
    ctx = StageContext.open(settings, spec.name)
    recipes = plan_recipes(spec)
    with _progress(progress) as bar:
        total = 3 + len(recipes)
        task = bar.add_task("ingest", total=total) if bar else None

        def step(desc: str) -> None:
            if bar is not None and task is not None:
                bar.update(task, advance=1, description=desc)

        ing = ingest(spec, ctx)
        step("baseline")
        base = baseline(spec, ing, ctx)
        shape = ing.dataset.input_shape
        base_benches = {
            p.name: benchmark(base.onnx, shape, p, ctx, run_id=base.parent_run_id, model_id=base.model_id)
            for p in spec.devices
        }
        outcomes: list[CandidateOutcome] = []
        skipped: list[str] = []
        for recipe in recipes:
            step(f"candidate {recipe.label}")
            if time.monotonic() - t0 > spec.search.max_seconds:
                skipped.append(recipe.label)
                continue
            cand = optimize(spec, ing, base, recipe, ctx)
            verdict = gate(spec, ing, base, cand, ctx)
            benches = []
            if cand.status == "ok" and cand.onnx is not None:
                benches = [
                    benchmark(cand.onnx, shape, p, ctx, run_id=cand.run_id, model_id=cand.model_id)
                    for p in spec.devices
                ]
                ctx.tracker.finish(cand.run_id)
            outcomes.append(CandidateOutcome(candidate=cand, gate=verdict, benchmarks=benches))
        if skipped:
            log.warning(
                "search budget (%.0fs) ran out; not tried: %s", spec.search.max_seconds, ", ".join(skipped)
            )
        step("promote")
        target = base_benches[spec.target.name]
        promotion = promote(spec, ing, base, target, outcomes, ctx)
        step("done")

    rows = []
    for o in outcomes:
        ok, why = eligibility(o, base, target, ing)
        b = target_benchmark(o, spec.target.name)
        c = o.candidate
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
                gate="pass" if o.gate.passed else "fail",
                eligible=ok,
                note="promoted" if promotion.candidate_key == c.key else why,
                run_id=c.run_id,
                model_id=c.model_id,
            )
        )
    return JobResult(
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
        tracking_uri=settings.tracking_uri,
        artifacts=ctx.store.root,
        parent_run_id=ing.parent_run_id,
        experiment_id=ctx.tracker.experiment_id,
        seconds=time.monotonic() - t0,
    )
