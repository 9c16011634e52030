"""Promote: register the best eligible candidate as a new model version and move the alias to it.

Eligible means: built, passed the gate on evidence recorded for this very candidate, baseline and
dataset, and measured faster AND no larger than the baseline on the target profile, or, where the
measurement cannot tell their speeds apart, measurably smaller (`eligibility`). Speed is judged on the
confidence interval of the paired speedup where the candidate was measured interleaved with the baseline
(local ONNX Runtime profiles), else on the two p50s. A candidate that is slower or larger is never
promoted, whatever its other scores. Nothing eligible: nothing moves. With the latency objective,
candidates whose speeds the measurement cannot tell apart tie, and the smaller of them wins (`choose`).
A gate verdict counts only when it is exactly the gate record in the artifact store, for this job's
tolerance.

The best eligible candidate is registered, then contends for the alias: it takes the alias only when
it beats the version holding it by the job's objective, on comparable measurements (`beats`).
Contenders for one alias take turns (`contest_alias`), so two jobs promoting at once end with exactly
one winner and the other recording that it lost. Every move of the alias is recorded in the
registered model's history, which `squeezeflow rollback` uses to move it back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from squeezeflow.errors import InfrastructureError, InvalidInputError, PromotionRefused
from squeezeflow.gate.verdicts import is_not_evaluated
from squeezeflow.results import (
    BaselineResult,
    BenchmarkResult,
    CandidateOutcome,
    CandidateResult,
    GateResult,
    IngestResult,
    PromotionResult,
    content_key,
)
from squeezeflow.spec.job import JobSpec
from squeezeflow.stages.context import StageContext
from squeezeflow.tracking.aliases import AliasMove
from squeezeflow.tracking.client import redact_uri
from squeezeflow.tracking.registry_tags import (
    MAX_REGISTERED_MODEL_DESCRIPTION_LENGTH,
    contest_tag,
    rolled_back_tag,
)
from squeezeflow.tracking.runs import TAG_CANDIDATE

log = logging.getLogger(__name__)


def target_benchmark(outcome: CandidateOutcome, profile: str) -> BenchmarkResult | None:
    return next((b for b in outcome.benchmarks if b.profile == profile), None)


# How much larger than the baseline a faster candidate may be (graph overhead, not weights); also how
# much smaller than the baseline a candidate must be to count as measurably smaller.
SIZE_SLACK = 0.01
# Speed differences smaller than this are not called either way, whatever the interval: two sessions of
# the same model in one worker differ by 1-2% (measured: a model paired with itself was called slower in
# 5 of 100 runs at the 95% level, each time by 1-2%).
SPEED_MARGIN = 0.02


@dataclass(frozen=True)
class Speed:
    """How many times faster than the baseline a candidate is on the target profile (``ratio``), and the
    interval the measurement supports (``low``..``high``). Paired: the speedup and its confidence
    interval measured interleaved with this baseline. Unpaired: the ratio of the two p50s, widened by
    twice the candidate's round-to-round variation (its measured noise)."""

    ratio: float
    low: float
    high: float
    paired: bool
    confidence: float | None = None

    def __str__(self) -> str:
        how = "faster" if self.ratio >= 1 else "the baseline's speed"
        if self.paired:
            level = f"{self.confidence:.0%} CI" if self.confidence else "CI"
            return f"{self.ratio:.2f}x {how} ({level} {self.low:.2f}-{self.high:.2f}, paired)"
        return f"{self.ratio:.2f}x {how} (p50s)"


def speed_of(bench: BenchmarkResult, baseline_bench: BenchmarkResult, baseline: BaselineResult) -> Speed:
    """The candidate's `Speed`: paired when ``bench`` was measured interleaved with this very baseline and
    has an interval; else from the p50s (remote and pytorch_eager profiles, older records)."""
    if (
        bench.paired_baseline_sha256 == baseline.onnx.sha256
        and bench.speedup is not None
        and bench.speedup_low is not None
        and bench.speedup_high is not None
    ):
        return Speed(bench.speedup, bench.speedup_low, bench.speedup_high, True, bench.speedup_confidence)
    ratio = baseline_bench.p50_ms / bench.p50_ms if bench.p50_ms > 0 else math.inf
    noise = 1 + 2 * (bench.cv_p50 if math.isfinite(bench.cv_p50) else 0.0)
    return Speed(ratio, ratio / noise, ratio * noise, False)


def eligibility(
    outcome: CandidateOutcome, baseline: BaselineResult, baseline_bench: BenchmarkResult, ingest: IngestResult
) -> tuple[bool, str]:
    """Whether the candidate may be promoted, and why (not)."""
    c, g = outcome.candidate, outcome.gate
    if c.status == "abandoned":  # its error says why: "abandoned after recovery epoch ..."
        return False, c.error or "abandoned"
    if c.status != "ok" or c.onnx is None or c.measure is None:
        return False, f"not built: {c.error}"
    if g.candidate_key != c.key or g.candidate_sha256 != c.onnx.sha256:
        return False, "gate evidence belongs to a different candidate"
    if g.baseline_sha256 != baseline.onnx.sha256 or g.dataset_sha256 != ingest.dataset.sha256:
        return False, "gate evidence belongs to a different baseline or dataset"
    if not g.passed:
        return False, g.reason if is_not_evaluated(g) else f"failed the gate: {g.reason}"
    bench = target_benchmark(outcome, baseline_bench.profile)
    if bench is None or bench.model_sha256 != c.onnx.sha256:
        return False, f"not benchmarked on the target profile {baseline_bench.profile}"
    from squeezeflow.stages.benchmark import budget_violations

    over = [v for b in outcome.benchmarks for v in budget_violations(b.budgets, b)]
    if over:
        return False, "over budget: " + "; ".join(over)
    size, base_size = c.measure.size_bytes, baseline.measure.size_bytes
    speed = speed_of(bench, baseline_bench, baseline)
    if not speed.paired:  # two p50s from separate processes: no interval to judge them by
        if bench.p50_ms >= baseline_bench.p50_ms:
            return (
                False,
                f"slower than the baseline on {bench.profile} "
                f"(p50 {bench.p50_ms:.3f} ms vs {baseline_bench.p50_ms:.3f} ms)",
            )
    elif speed.high < 1 - SPEED_MARGIN:
        return False, f"slower than the baseline on {bench.profile}: {speed}"
    # A faster model of the baseline's size is a win (an exact speed-only transform such as trimming
    # padding adds a few graph nodes); a larger one never is.
    if size > base_size * (1 + SIZE_SLACK):
        return False, f"larger than the baseline ({size} vs {base_size} bytes)"
    if not speed.paired:
        return True, "eligible"
    if speed.low > 1 + SPEED_MARGIN:
        return True, f"eligible: {speed}: measurably faster on {bench.profile}"
    # The interval holds 1: no measurable difference in speed, so only being smaller can make it a win.
    smaller = f"{base_size / size:.2f}x smaller" if size > 0 else "no bytes"
    if size < base_size * (1 - SIZE_SLACK):
        return True, f"eligible: {speed}: no measurable difference in speed on {bench.profile}; {smaller}"
    return (
        False,
        f"{speed}: no measurable difference in speed on {bench.profile}, and not measurably smaller than "
        f"the baseline ({size} vs {base_size} bytes)",
    )


def choose(
    spec: JobSpec,
    outcomes: list[CandidateOutcome],
    baseline: BaselineResult,
    baseline_bench: BenchmarkResult,
    ingest: IngestResult,
) -> CandidateOutcome | None:
    """The best eligible candidate by the job's objective, or None. Size: the smallest (then the lowest p50,
    then the key). Latency, with a noise band: the fastest eligible candidate (highest speedup) and every
    candidate whose speed the measurement cannot tell from it (its `Speed` interval reaches the fastest
    one's) are tied, and the smallest of those wins (then the faster, then the key), so a much smaller
    model is not passed over for a speed difference the benchmark cannot resolve."""
    eligible = [o for o in outcomes if eligibility(o, baseline, baseline_bench, ingest)[0]]
    if not eligible:
        return None

    def size(o: CandidateOutcome) -> float:
        assert o.candidate.measure is not None
        return float(o.candidate.measure.size_bytes)

    def bench(o: CandidateOutcome) -> BenchmarkResult:
        b = target_benchmark(o, baseline_bench.profile)
        assert b is not None
        return b

    if spec.objective != "latency":
        return min(eligible, key=lambda o: (size(o), bench(o).p50_ms, o.candidate.key))
    speeds = {o.candidate.key: speed_of(bench(o), baseline_bench, baseline) for o in eligible}
    fastest = min(eligible, key=lambda o: (-speeds[o.candidate.key].ratio, size(o), o.candidate.key))
    floor = speeds[fastest.candidate.key].low
    tied = [o for o in eligible if speeds[o.candidate.key].high >= floor]
    return min(tied, key=lambda o: (size(o), -speeds[o.candidate.key].ratio, o.candidate.key))


def promote(
    spec: JobSpec,
    ingest: IngestResult,
    baseline: BaselineResult,
    baseline_bench: BenchmarkResult,
    outcomes: list[CandidateOutcome],
    ctx: StageContext,
) -> PromotionResult:
    """Register the best eligible candidate and move the alias to it when it beats the version the
    alias holds (see `contest_alias`). Only candidates and gate verdicts that match their records
    in the artifact store count (`evidence_problem`). Idempotent: a retry finds the version it
    registered and the contest it already decided.

    The steps: choose the winner (`_choose_winner`), check its artifact (`_check_artifact`), register
    it (`_register`), contend for the alias (`_contest`), record the outcome (`_record_nothing_promoted`,
    `_record_lost`, `_record_promoted`)."""
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
        # A rerun of a job that failed or was killed after promoting: its run ends here as it would have.
        ctx.tracker.finish(ingest.parent_run_id)
        return PromotionResult.model_validate(recorded)

    previous = ctx.tracker.alias_version(name, alias)
    best, passed_over = _choose_winner(spec, ingest, baseline, baseline_bench, outcomes, ctx)
    if best is None:
        return _record_nothing_promoted(spec, key, ingest, previous, passed_over, ctx)
    bench = _check_artifact(best, baseline, baseline_bench, ingest)
    version = _register(spec, ingest, baseline, baseline_bench, best, bench, ctx)
    won, holder, why = _contest(spec, key, version, best, baseline, ctx)
    if not won:
        return _record_lost(spec, key, ingest, best, str(version.version), holder, why, ctx)
    return _record_promoted(spec, key, ingest, best, str(version.version), holder, why, ctx)


def _choose_winner(
    spec: JobSpec,
    ingest: IngestResult,
    baseline: BaselineResult,
    baseline_bench: BenchmarkResult,
    outcomes: list[CandidateOutcome],
    ctx: StageContext,
) -> tuple[CandidateOutcome | None, str]:
    """Choose the winner: the best eligible candidate (`choose`) among those whose records match the
    artifact store (`evidence_problem`), and ""; or None and why each candidate was passed over."""
    distrusted = {
        o.candidate.key: why
        for o in outcomes
        if (why := evidence_problem(spec, o, baseline, ctx)) is not None
    }
    trusted = [o for o in outcomes if o.candidate.key not in distrusted]
    best = choose(spec, trusted, baseline, baseline_bench, ingest)
    if best is not None:
        return best, ""
    reasons = "; ".join(
        f"{o.candidate.label}: "
        + (distrusted.get(o.candidate.key) or eligibility(o, baseline, baseline_bench, ingest)[1])
        for o in outcomes
    )
    return None, reasons


def _check_artifact(
    best: CandidateOutcome, baseline: BaselineResult, baseline_bench: BenchmarkResult, ingest: IngestResult
) -> BenchmarkResult:
    """Check the winner before it is registered: it has its LoggedModel, ONNX artifact, measurements and
    a benchmark on the target profile (returned), and is still eligible (defensive: `choose` only
    returns eligible candidates); PromotionRefused when it is not."""
    c = best.candidate
    bench = target_benchmark(best, baseline_bench.profile)
    assert c.model_id and c.onnx and c.measure and bench is not None
    ok, why = eligibility(best, baseline, baseline_bench, ingest)
    if not ok:
        raise PromotionRefused(f"refusing to promote {c.label}: {why}")
    return bench


def _register(
    spec: JobSpec,
    ingest: IngestResult,
    baseline: BaselineResult,
    baseline_bench: BenchmarkResult,
    best: CandidateOutcome,
    bench: BenchmarkResult,
    ctx: StageContext,
) -> Any:
    """Register the winner: its model version, found again when a retry or another promotion registered
    it already, else created with its evidence (candidate, baseline, dataset, gate, benchmark) as tags
    and, in the same call, as a contender for the alias (``squeezeflow.contest.<alias> = pending``)."""
    name, alias = spec.registry.model_name, spec.registry.alias
    c, g = best.candidate, best.gate
    assert c.model_id and c.onnx and c.measure  # `_check_artifact`
    version = ctx.tracker.find_version(name, c.key)
    if version is not None:
        return version
    tags = {
        TAG_CANDIDATE: c.key,
        contest_tag(alias): "pending",
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
                "profile_settings": profile_settings_digest(spec),
                "p50_ms": bench.p50_ms,
                "p95_ms": bench.p95_ms,
                "p99_ms": bench.p99_ms,
                "baseline_p50_ms": baseline_bench.p50_ms,
                "speedup": bench.speedup,
                "speedup_low": bench.speedup_low,
                "speedup_high": bench.speedup_high,
                "size_bytes": c.measure.size_bytes,
                "baseline_size_bytes": baseline.measure.size_bytes,
            }
        ),
    }
    description = version_description(spec, ingest, c, g, bench, baseline, baseline_bench)
    return ctx.tracker.register(c.model_id, name, c.run_id, tags, description)


def _contest(
    spec: JobSpec, key: str, version: Any, best: CandidateOutcome, baseline: BaselineResult, ctx: StageContext
) -> tuple[bool, str | None, str]:
    """The alias contest for the registered ``version``: (won, the version it lost to or took the alias
    from, why). A retry of this promotion (``key``) after its contest was decided reports that decision
    and never contests again (the alias may have been rolled back since); a version rolled back from
    the alias loses; any other takes its turn in `contest_alias` (joining the queue when another
    promotion registered it)."""
    name, alias = spec.registry.model_name, spec.registry.alias
    c, g = best.candidate, best.gate
    contest = contest_tag(alias)
    v = str(version.version)
    vtags = dict(version.tags or {})
    if vtags.get(contest) in ("won", "lost") and vtags.get(contest_tag(alias, "by")) == key:
        # A retry of this promotion after its contest was decided but before its record was written:
        # report that decision, never contest again (the alias may have been rolled back since).
        won = vtags[contest] == "won"
        holder = vtags.get(contest_tag(alias, "against")) or None
        why = vtags.get(contest_tag(alias, "reason"), "")
        return won, holder, why
    if vtags.get(rolled_back_tag(alias)):
        why = (
            f"version {v} was rolled back from @{alias}, so squeezeflow does not promote it again "
            f"(to do so deliberately: squeezeflow rollback {name} --alias {alias} --to {v})"
        )
        return False, ctx.tracker.alias_version(name, alias), why
    if vtags.get(contest) != "pending":  # registered by another promotion: join the queue
        ctx.tracker.set_version_tags(name, v, {contest: "pending"})

    def before_the_alias_moves() -> None:
        from squeezeflow.stages.gate import mark_candidate

        mark_candidate(ctx, baseline, c, g, "promoted")  # never let a lifecycle rule expire what serves

    def record_verdict(won: bool, holder: str | None, why: str) -> None:
        # The verdict last: it ends this version's turn in the queue, and a retry trusts it.
        verdict = {
            contest_tag(alias, "against"): holder or "",
            contest_tag(alias, "reason"): why[:5000],
            contest_tag(alias, "by"): key,
            contest: "won" if won else "lost",
        }
        ctx.tracker.set_version_tags(name, v, verdict)

    return contest_alias(spec, ctx, v, vtags, before_the_alias_moves, record_verdict)


def _record_nothing_promoted(
    spec: JobSpec, key: str, ingest: IngestResult, previous: str | None, passed_over: str, ctx: StageContext
) -> PromotionResult:
    """Record that no candidate was eligible (``passed_over``: why each was passed over) on the job's
    run, end the run, and write the promotion record."""
    parent = ingest.parent_run_id
    result = PromotionResult(
        key=key,
        promoted=False,
        model_name=spec.registry.model_name,
        alias=spec.registry.alias,
        previous_version=previous,
        reason=f"no candidate is eligible, nothing promoted ({passed_over or 'no candidates'})",
    )
    ctx.tracker.log(
        parent,
        tags={"squeezeflow.promotion": "none", "squeezeflow.promotion_reason": result.reason[:5000]},
    )
    ctx.tracker.finish(parent)
    ctx.store.write_record("promote", key, result)
    return result


def _record_lost(
    spec: JobSpec,
    key: str,
    ingest: IngestResult,
    best: CandidateOutcome,
    v: str,
    holder: str | None,
    why: str,
    ctx: StageContext,
) -> PromotionResult:
    """Record that version ``v`` of the winner lost the contest to ``holder``, on the candidate's run and
    the job's run, end the job's run, and write the promotion record."""
    name, alias = spec.registry.model_name, spec.registry.alias
    c, parent = best.candidate, ingest.parent_run_id
    reason = f"{c.label} (registered as version {v}) lost the promotion to @{alias}: {why}"
    lost_to = f"{name}/{holder}" if holder else "none"
    ctx.tracker.log(c.run_id, tags={"squeezeflow.promotion": f"lost ({lost_to})"})
    ctx.tracker.log(
        parent,
        tags={
            "squeezeflow.promotion": "lost",
            "squeezeflow.promotion_reason": reason[:5000],
            "squeezeflow.promotion_lost_to": lost_to,
        },
    )
    ctx.tracker.finish(parent)
    result = PromotionResult(
        key=key,
        promoted=False,
        model_name=name,
        alias=alias,
        previous_version=ctx.tracker.alias_version(name, alias),
        lost_to=holder,
        contender_key=c.key,
        contender_version=v,
        reason=reason,
    )
    log.info(result.reason)
    ctx.store.write_record("promote", key, result)
    return result


def _record_promoted(
    spec: JobSpec,
    key: str,
    ingest: IngestResult,
    best: CandidateOutcome,
    v: str,
    holder: str | None,
    why: str,
    ctx: StageContext,
) -> PromotionResult:
    """Record that version ``v`` of the winner took the alias from ``holder``: the registered model's
    description, tags on the candidate's run and the job's run, the end of the job's run, and the
    promotion record."""
    name, alias = spec.registry.model_name, spec.registry.alias
    c, parent = best.candidate, ingest.parent_run_id
    ctx.tracker.describe_registered_model(name, registered_model_description(spec))
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
        previous_version=holder,
        reason=f"promoted {c.label} as {name} version {v} (@{alias}): {why}",
    )
    log.info(result.reason)
    ctx.store.write_record("promote", key, result)
    return result


# -- what the registry says about a promotion ------------------------------------------------------


def registered_model_description(spec: JobSpec) -> str:
    """The registered model's description: the spec's ``registry.description``, else what the model is,
    which job produces it, the metric and the tolerance (Markdown, as the MLflow UI shows it). Written by
    `Tracker.describe_registered_model`, which never overwrites a description a person wrote."""
    if spec.registry.description:
        return spec.registry.description
    tol = spec.tolerance
    if tol.mode == "absolute":
        allowed = f"may drop at most {tol.max_drop:g} from the baseline's"
    else:
        allowed = f"may drop at most {tol.max_drop:.2%} of the baseline's"
    judged = (
        f"the upper {tol.confidence:.0%} confidence bound of the drop"
        if tol.method == "bootstrap"
        else "the measured drop"
    )
    better = "p50 latency, then size" if spec.objective == "latency" else "size, then p50 latency"
    return (
        f"Compressed versions of `{redact_uri(spec.model.uri)}`, produced by the squeezeflow job "
        f"`{spec.name}` "
        "(quantization, pruning, distillation; each version's description gives its recipe).\n\n"
        f"- metric: `{spec.task.metric}` on the held-out split, {allowed} ({tol.mode} tolerance "
        f"{tol.max_drop:g}, judged on {judged})\n"
        f"- promoted only when faster and no larger than the baseline on `{spec.target.name}`, or as fast "
        "within the measurement's confidence interval and measurably smaller\n"
        f"- @{spec.registry.alias} holds the best promoted version by {better}; "
        f"`squeezeflow rollback {spec.registry.model_name} --alias {spec.registry.alias}` moves it back\n\n"
        "Written by squeezeflow; edit it in the registry and squeezeflow leaves it as you wrote it."
    )[:MAX_REGISTERED_MODEL_DESCRIPTION_LENGTH]


def version_description(
    spec: JobSpec,
    ingest: IngestResult,
    candidate: CandidateResult,
    gate: GateResult,
    bench: BenchmarkResult,
    baseline: BaselineResult,
    baseline_bench: BenchmarkResult,
) -> str:
    """A promoted model version's description (Markdown): the recipe, the metric against the baseline, the
    size and speed ratios against the baseline, and the job's MLflow run."""
    assert candidate.measure is not None and gate.candidate_metric is not None
    steps = " → ".join(
        f"`{s.name}({', '.join(f'{k}={v!r}' for k, v in sorted(s.params.items()))})`"
        for s in candidate.recipe.steps
    )
    drop = "" if gate.drop is None else f", drop {gate.drop:.4f}"
    if gate.drop_upper is not None and gate.confidence is not None:
        drop += f" (upper {gate.confidence:.0%} bound {gate.drop_upper:.4f})"
    size, base_size = candidate.measure.size_bytes, baseline.measure.size_bytes
    speed = speed_of(bench, baseline_bench, baseline)
    paired = f"; measured interleaved with the baseline: {speed}" if speed.paired else ""
    return (
        f"**{candidate.label}**, compressed from `{redact_uri(spec.model.uri)}` by the squeezeflow job "
        f"`{spec.name}`.\n\n"
        f"- recipe: {steps[:1500]}\n"
        f"- {gate.metric_name}: {gate.candidate_metric:.4f} against the baseline's {gate.baseline_metric:.4f}"
        f"{drop}; allowed drop {gate.allowed_drop:.4f} (n = {gate.n})\n"
        f"- size: {base_size / size:.2f}x smaller than the baseline ({size} vs {base_size} bytes)\n"
        f"- speed: {baseline_bench.p50_ms / bench.p50_ms:.2f}x faster p50 on `{bench.profile}` "
        f"({bench.p50_ms:.3f} vs {baseline_bench.p50_ms:.3f} ms){paired}\n"
        f"- job run: MLflow run `{ingest.parent_run_id}` (this candidate's run: `{candidate.run_id}`)"
    )[:MAX_REGISTERED_MODEL_DESCRIPTION_LENGTH]


# -- trusting the evidence --------------------------------------------------------------------------


def _record_problem(ctx: StageContext, stage: str, key: str, carried: BaseModel, what: str) -> str | None:
    """Why ``carried`` (the outcome's ``what``) is not exactly the ``stage`` record under ``key``."""
    try:
        stored = ctx.store.read_record(stage, key)
    except InvalidInputError as err:  # an unsafe key or an unreadable record
        return f"its {stage} record cannot be read ({err})"
    if stored is None:
        return f"its {stage} record {stage}/{key} is missing from the artifact store {ctx.store.root}"
    try:
        # Compare values, not JSON text: records are stored with sorted keys, and free-form fields
        # (a candidate's notes) keep their insertion order in memory.
        same = type(carried).model_validate(stored).model_dump(mode="json") == carried.model_dump(mode="json")
    except ValidationError:
        same = False
    return None if same else f"its {what} differs from the {stage} record {stage}/{key} in the artifact store"


def evidence_problem(
    spec: JobSpec, outcome: CandidateOutcome, baseline: BaselineResult, ctx: StageContext
) -> str | None:
    """Why the outcome cannot be trusted, or None. Outcomes travel through adapters (XCom, KFP
    parameters, files), so promotion believes a candidate and its gate verdict only when they are
    exactly the records the optimize and gate stages wrote to the artifact store (each written last,
    after everything it points to), the verdict was judged against this job's tolerance, and the
    candidate's MLflow model finished logging."""
    c, g = outcome.candidate, outcome.gate
    if c.status != "ok" or not g.passed:
        # Nothing of it would be registered, whatever its records say, and eligibility() says why (a
        # candidate the engine did not send to the gate, being slower, has no gate record at all).
        return None
    why = _record_problem(ctx, "gate", g.key, g, "gate verdict")
    if why is not None:
        return why
    allowed = spec.tolerance.allowed_drop(baseline.metric)
    if not math.isclose(g.allowed_drop, allowed, rel_tol=1e-9, abs_tol=1e-12):
        return (
            f"its gate verdict allowed a drop of {g.allowed_drop:.4f}, "
            f"not this job's {allowed:.4f} (the gate ran with another tolerance)"
        )
    why = _record_problem(ctx, "optimize", c.key, c, "candidate")
    if why is not None:
        return why
    if c.model_id is None or not ctx.tracker.logged_model_ready(c.model_id):
        return f"its MLflow model {c.model_id} did not finish logging"
    return None


# -- the contest for the alias ----------------------------------------------------------------------


def profile_settings_digest(spec: JobSpec) -> str:
    """What makes two measurements on the target profile comparable: its measurement settings."""
    return hashlib.sha256(spec.target.measurement_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Standing:
    """A registered version's recorded measurement on its target profile, and the conditions under
    which it was taken (two standings are ranked only when their conditions are equal)."""

    conditions: dict[str, str]
    p50_ms: float
    size_bytes: float

    def rank(self, objective: str) -> tuple[float, float]:
        lat, size = self.p50_ms, self.size_bytes
        return (lat, size) if objective == "latency" else (size, lat)


def standing(tags: dict[str, str]) -> Standing | None:
    """The standing recorded in a version's tags by `promote`, or None (registered by someone else)."""
    try:
        bench = json.loads(tags["squeezeflow.benchmark"])
        gate = json.loads(tags["squeezeflow.gate"])
        return Standing(
            conditions={
                "profile": str(bench["profile"]),
                "profile settings": str(bench.get("profile_settings", "")),
                "dataset": tags["squeezeflow.dataset_sha256"],
                "baseline": tags["squeezeflow.baseline_onnx_sha256"],
                "metric": str(gate["metric"]),
            },
            p50_ms=float(bench["p50_ms"]),
            size_bytes=float(bench["size_bytes"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def beats(mine: Standing | None, theirs: Standing | None, holder: str, objective: str) -> tuple[bool, str]:
    """Whether our version should take the alias from version ``holder``, and why.

    Comparable standings (same profile and settings, dataset, baseline and metric) are ranked by the
    objective (latency: p50 then size; size: size then p50); a tie keeps the holder. A holder with no
    comparable standing (registered by hand, measured elsewhere, or gated on other data or another
    baseline, as after retraining) cannot be shown to be better, so the newer promotion replaces it.
    """
    if theirs is None:
        return True, f"version {holder} has no recorded squeezeflow benchmark to compare with; replaced it"
    if mine is None:  # not reached: promote() writes the tags standing() reads
        return False, "this version has no recorded benchmark to compare with"
    differ = [k for k, val in mine.conditions.items() if theirs.conditions.get(k) != val]
    if differ:
        return True, (
            f"version {holder} was measured under other conditions ({', '.join(differ)} differ), so the "
            "objective cannot rank the two; the newer promotion replaced it"
        )
    detail = _detail(mine, theirs)
    if mine.rank(objective) < theirs.rank(objective):
        return True, f"beats version {holder} on {objective} ({detail})"
    return False, f"version {holder} is as good or better on {objective} ({detail})"


def contest_alias(
    spec: JobSpec,
    ctx: StageContext,
    version: str,
    tags: dict[str, str],
    before_the_alias_moves: Callable[[], None],
    record_verdict: Callable[[bool, str | None, str], None],
    attempts: int = 3,
) -> tuple[bool, str | None, str]:
    """Compare-and-set of the alias for ``version``: (won, the version it lost to or took the alias
    from, why), recorded with ``record_verdict`` (on the version; it ends the version's turn).

    Promotions to one alias take turns in version order (`Tracker.contest_turn`, after a settle time
    that lets contenders starting together all register), so no two contenders read-compare-write at
    once and a slower, worse contender cannot overwrite a better one (no lost update). In its turn a
    contender yields to any comparable contender still waiting that is strictly better by the
    objective (so of two jobs promoting at once, exactly the better one wins and the other records that
    it lost), else compares itself with the holder (`beats`), sets the alias and re-reads it; when
    something outside squeezeflow moved the alias in between, it compares again.

    Promotions that register within ``SQUEEZEFLOW_PROMOTION_SETTLE_S`` (default 2 s) of each other
    are "at once"; later ones take the alias in turn when they beat the holder. A contender that was
    killed stops blocking the others once its heartbeat is ``SQUEEZEFLOW_PROMOTION_STALE_S`` (default
    60 s) old; its retry (the same promotion) takes its turn again.

    Moving the alias and recording the move is all or nothing (`_move_alias`): when the registry
    refuses the record, the alias goes back to the version it held and an InfrastructureError says so."""
    name, alias, keep = spec.registry.model_name, spec.registry.alias, spec.registry.history_limit
    stale_s = float(os.environ.get("SQUEEZEFLOW_PROMOTION_STALE_S", "60"))
    settle_s = float(os.environ.get("SQUEEZEFLOW_PROMOTION_SETTLE_S", "2"))
    rivals = ctx.tracker.contest_turn(name, version, alias, stale_s, settle_s)
    mine = standing(tags)
    if mine is not None and (better := _better_rival(rivals, mine, spec.objective)) is not None:
        rival, theirs = better
        why = (
            f"version {rival}, promoted at the same time, is better on {spec.objective} "
            f"({_detail(theirs, mine)})"
        )
        record_verdict(False, rival, why)
        return False, rival, why
    for _ in range(attempts):
        holder = ctx.tracker.alias_version(name, alias)
        if holder == version:  # a retry of a promotion that set the alias and then stopped
            moves = ctx.tracker.alias_history(name, alias)
            if moves and moves[-1].to_version == version:
                record_verdict(True, moves[-1].from_version, moves[-1].reason)
                return True, moves[-1].from_version, moves[-1].reason
            before = moves[-1].to_version if moves else None
            why = f"@{alias} already pointed at version {version} (its promotion stopped before recording it)"
            if _move_alias(ctx, name, alias, version, before, why, record_verdict, keep):
                return True, before, why
            continue  # moved by something else meanwhile: compare again
        if holder is None:
            wins, why = True, f"@{alias} was not set"
        else:
            wins, why = beats(
                mine, standing(ctx.tracker.model_version(name, holder).tags), holder, spec.objective
            )
        if not wins:
            record_verdict(False, holder, why)
            return False, holder, why
        before_the_alias_moves()
        if _move_alias(ctx, name, alias, version, holder, why, record_verdict, keep):
            return True, holder, why
        log.warning("%s@%s moved while version %s was being promoted; comparing again", name, alias, version)
    raise InfrastructureError(
        f"{name}@{alias} kept moving while version {version} was being promoted ({attempts} attempts): "
        "something outside squeezeflow is setting it; retry the promotion"
    )


def _move_alias(
    ctx: StageContext,
    name: str,
    alias: str,
    version: str,
    holder: str | None,
    why: str,
    record_verdict: Callable[[bool, str | None, str], None],
    history_limit: int,
) -> bool:
    """Move ``alias`` from ``holder`` to ``version`` and record it: the history entry (what rollback
    replays), then the verdict. All or nothing (`Tracker.alias_moved`): if either record fails, the
    history entry is taken back, the alias goes back to ``holder`` and an InfrastructureError says so.
    False, with nothing recorded, when something outside squeezeflow moved the alias at the same time.
    Once the move is complete, the history keeps only its newest ``history_limit`` entries."""
    written: list[AliasMove] = []

    def take_back() -> None:
        for move in written:
            ctx.tracker.forget_alias_move(name, alias, move)

    with ctx.tracker.alias_moved(name, alias, version, back_to=holder, undo=take_back):
        if ctx.tracker.alias_version(name, alias) != version:
            return False
        written.append(
            ctx.tracker.record_alias_move(
                name, alias, holder, version, "promote", why, history_limit=history_limit
            )
        )
        record_verdict(True, holder, why)
    ctx.tracker.prune_alias_history(name, alias, history_limit)
    return True


def _better_rival(rivals: list[Any], mine: Standing, objective: str) -> tuple[str, Standing] | None:
    """The first contender still waiting whose standing is comparable with ours and strictly better."""
    for rival in sorted(rivals, key=lambda r: int(r.version)):
        theirs = standing(dict(rival.tags or {}))
        if (
            theirs is not None
            and theirs.conditions == mine.conditions
            and theirs.rank(objective) < mine.rank(objective)
        ):
            return str(rival.version), theirs
    return None


def _detail(a: Standing, b: Standing) -> str:
    return (
        f"p50 {a.p50_ms:.4f} vs {b.p50_ms:.4f} ms, size {a.size_bytes:.0f} vs {b.size_bytes:.0f} bytes "
        f"on {a.conditions['profile']}"
    )
