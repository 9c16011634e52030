"""Promote: register the best eligible candidate as a new model version and move the alias to it.

Eligible means: built, passed the gate on evidence recorded for this very candidate, baseline and
dataset, and measured faster AND smaller than the baseline on the target profile. A candidate that
is slower or larger is never promoted, whatever its other scores. Nothing eligible: nothing moves.
"""

from __future__ import annotations

import json
import logging

from squeezeflow.errors import PromotionRefused
from squeezeflow.results import (
    BaselineResult,
    BenchmarkResult,
    CandidateOutcome,
    IngestResult,
    PromotionResult,
    content_key,
)
from squeezeflow.spec import JobSpec
from squeezeflow.stages.context import StageContext
from squeezeflow.tracking import TAG_CANDIDATE

log = logging.getLogger(__name__)


def target_benchmark(outcome: CandidateOutcome, profile: str) -> BenchmarkResult | None:
    return next((b for b in outcome.benchmarks if b.profile == profile), None)


def eligibility(
    outcome: CandidateOutcome, baseline: BaselineResult, baseline_bench: BenchmarkResult, ingest: IngestResult
) -> tuple[bool, str]:
    """Whether the candidate may be promoted, and why (not)."""
    c, g = outcome.candidate, outcome.gate
    if c.status != "ok" or c.onnx is None or c.measure is None:
        return False, f"not built: {c.error}"
    if g.candidate_key != c.key or g.candidate_sha256 != c.onnx.sha256:
        return False, "gate evidence belongs to a different candidate"
    if g.baseline_sha256 != baseline.onnx.sha256 or g.dataset_sha256 != ingest.dataset.sha256:
        return False, "gate evidence belongs to a different baseline or dataset"
    if not g.passed:
        return False, f"failed the gate: {g.reason}"
    bench = target_benchmark(outcome, baseline_bench.profile)
    if bench is None or bench.model_sha256 != c.onnx.sha256:
        return False, f"not benchmarked on the target profile {baseline_bench.profile}"
    if bench.p50_ms >= baseline_bench.p50_ms:
        return (
            False,
            f"slower than the baseline on {bench.profile} "
            f"(p50 {bench.p50_ms:.3f} ms vs {baseline_bench.p50_ms:.3f} ms)",
        )
    if c.measure.size_bytes >= baseline.measure.size_bytes:
        return (
            False,
            f"not smaller than the baseline ({c.measure.size_bytes} vs {baseline.measure.size_bytes} bytes)",
        )
    return True, "eligible"


def choose(
    spec: JobSpec,
    outcomes: list[CandidateOutcome],
    baseline: BaselineResult,
    baseline_bench: BenchmarkResult,
    ingest: IngestResult,
) -> CandidateOutcome | None:
    eligible = [o for o in outcomes if eligibility(o, baseline, baseline_bench, ingest)[0]]
    if not eligible:
        return None

    def score(o: CandidateOutcome) -> tuple[float, float, str]:
        bench = target_benchmark(o, baseline_bench.profile)
        assert bench is not None and o.candidate.measure is not None
        lat, size = bench.p50_ms, float(o.candidate.measure.size_bytes)
        return (lat, size, o.candidate.key) if spec.objective == "latency" else (size, lat, o.candidate.key)

    return min(eligible, key=score)


def promote(
    spec: JobSpec,
    ingest: IngestResult,
    baseline: BaselineResult,
    baseline_bench: BenchmarkResult,
    outcomes: list[CandidateOutcome],
    ctx: StageContext,
) -> PromotionResult:
    """Register and alias the best eligible candidate. Idempotent: a retry finds the version it made."""
    name, alias = spec.registry.model_name, spec.registry.alias
    key = content_key(
        "promote",
        ingest.job_key,
        name,
        alias,
        spec.objective,
        *sorted(f"{o.candidate.key}:{o.gate.key}" for o in outcomes),
    )
    recorded = ctx.store.read_record("promote", key)
    if recorded is not None:
        return PromotionResult.model_validate(recorded)

    best = choose(spec, outcomes, baseline, baseline_bench, ingest)
    parent = ingest.parent_run_id
    previous = ctx.tracker.alias_version(name, alias)
    if best is None:
        reasons = "; ".join(
            f"{o.candidate.label}: {eligibility(o, baseline, baseline_bench, ingest)[1]}" for o in outcomes
        )
        result = PromotionResult(
            key=key,
            promoted=False,
            model_name=name,
            alias=alias,
            previous_version=previous,
            reason=f"no candidate is eligible, nothing promoted ({reasons or 'no candidates'})",
        )
        ctx.tracker.log(
            parent,
            tags={"squeezeflow.promotion": "none", "squeezeflow.promotion_reason": result.reason[:5000]},
        )
        ctx.tracker.finish(parent)
        ctx.store.write_record("promote", key, result)
        return result

    c, g = best.candidate, best.gate
    bench = target_benchmark(best, baseline_bench.profile)
    assert c.model_id and c.onnx and c.measure and bench is not None
    ok, why = eligibility(best, baseline, baseline_bench, ingest)
    if not ok:  # defensive: choose() only returns eligible candidates
        raise PromotionRefused(f"refusing to promote {c.label}: {why}")

    version = ctx.tracker.find_version(name, c.key)
    if version is None:
        tags = {
            TAG_CANDIDATE: c.key,
            "squeezeflow.job_key": ingest.job_key,
            "squeezeflow.recipe": json.dumps(c.recipe.model_dump(mode="json"))[:5000],
            "squeezeflow.candidate_sha256": c.onnx.sha256,
            "squeezeflow.baseline_source": spec.model.uri,
            "squeezeflow.baseline_sha256": ingest.model_source.sha256,
            "squeezeflow.baseline_onnx_sha256": baseline.onnx.sha256,
            "squeezeflow.dataset_sha256": ingest.dataset.sha256,
            "squeezeflow.gate": json.dumps(
                {
                    "passed": g.passed,
                    "metric": g.metric_name,
                    "baseline": g.baseline_metric,
                    "candidate": g.candidate_metric,
                    "drop": g.drop,
                    "drop_upper": g.drop_upper,
                    "confidence": g.confidence,
                    "allowed_drop": g.allowed_drop,
                    "n": g.n,
                }
            ),
            "squeezeflow.gate_evidence_uri": g.evidence.uri if g.evidence else "",
            "squeezeflow.benchmark": json.dumps(
                {
                    "profile": bench.profile,
                    "p50_ms": bench.p50_ms,
                    "p95_ms": bench.p95_ms,
                    "p99_ms": bench.p99_ms,
                    "baseline_p50_ms": baseline_bench.p50_ms,
                    "size_bytes": c.measure.size_bytes,
                    "baseline_size_bytes": baseline.measure.size_bytes,
                }
            ),
        }
        description = (
            f"{c.label}: {g.metric_name} {g.candidate_metric:.4f} (baseline {g.baseline_metric:.4f}), "
            f"{baseline.measure.size_bytes / c.measure.size_bytes:.1f}x smaller, "
            f"{baseline_bench.p50_ms / bench.p50_ms:.2f}x faster p50 on {bench.profile}"
        )
        version = ctx.tracker.register(c.model_id, name, c.run_id, tags, description)
    v = str(version.version)
    if c.onnx is not None:
        ctx.store.mark(c.onnx, "promoted")  # before the alias moves: never expire what serves
    ctx.tracker.set_alias(name, alias, v)
    ctx.tracker.log(c.run_id, tags={"squeezeflow.promoted": f"{name}/{v}@{alias}"})
    ctx.tracker.log(
        parent, tags={"squeezeflow.promotion": f"{name}/{v}@{alias}", "squeezeflow.promoted_candidate": c.key}
    )
    ctx.tracker.finish(parent)
    result = PromotionResult(
        key=key,
        promoted=True,
        candidate_key=c.key,
        candidate_label=c.label,
        model_name=name,
        alias=alias,
        version=v,
        previous_version=previous,
        reason=f"promoted {c.label} as {name} version {v} (@{alias})",
    )
    log.info(result.reason)
    ctx.store.write_record("promote", key, result)
    return result
