"""The gate's verdicts (``GateResult``): their record key, and the verdict on a candidate that was not
built, on one measured, and on one the engine never sent to the gate."""

from __future__ import annotations

from typing import Any

from squeezeflow.gate.rules import Judgement
from squeezeflow.gate.scoring import HeldOut
from squeezeflow.results import BaselineResult, CandidateResult, GateResult, IngestResult, content_key
from squeezeflow.spec.job import JobSpec
from squeezeflow.store.artifacts import ArtifactRef


def verdict_key(
    spec: JobSpec, ingest: IngestResult, baseline: BaselineResult, candidate: CandidateResult
) -> str:
    """The verdict's record key, from everything it depends on: the same candidate judged under another
    metric, baseline, dataset, tolerance or bootstrap seed is a different verdict."""
    return content_key(
        "gate",
        candidate.key,
        candidate.onnx.sha256 if candidate.onnx else "",
        spec.tolerance.model_dump_json(),
        baseline.key,
        baseline.metric_name,
        baseline.onnx.sha256,
        ingest.dataset.sha256,
        str(spec.search.seed),
    )


def _common(
    spec: JobSpec, ingest: IngestResult, baseline: BaselineResult, candidate: CandidateResult, key: str
) -> dict[str, Any]:
    """The fields every recorded verdict fills the same way."""
    return {
        "key": key,
        "candidate_key": candidate.key,
        "baseline_sha256": baseline.onnx.sha256,
        "dataset_sha256": ingest.dataset.sha256,
        "metric_name": baseline.metric_name,
        "baseline_metric": baseline.metric,
        "allowed_drop": spec.tolerance.allowed_drop(baseline.metric),
    }


def not_built(
    spec: JobSpec, ingest: IngestResult, baseline: BaselineResult, candidate: CandidateResult, key: str
) -> GateResult:
    """A failing verdict for a candidate whose optimization produced no model."""
    return GateResult(
        **_common(spec, ingest, baseline, candidate, key),
        candidate_sha256=None,
        passed=False,
        reason=f"candidate was not built: {candidate.error}"
        if candidate.status != "abandoned"
        else f"candidate was not gated: {candidate.error}",
        candidate_metric=None,
        drop=None,
        n=0,
        agreement=None,
    )


def measured(
    spec: JobSpec,
    ingest: IngestResult,
    baseline: BaselineResult,
    candidate: CandidateResult,
    key: str,
    held: HeldOut,
    judged: Judgement,
    evidence: ArtifactRef,
) -> GateResult:
    """The verdict on a candidate the gate ran, pointing at its ``evidence`` document."""
    scores, decision = judged.scores, judged.decision
    return GateResult(
        **_common(spec, ingest, baseline, candidate, key),
        candidate_sha256=held.model.sha256,
        passed=decision.passed,
        reason=decision.reason,
        candidate_metric=scores.metric if scores else None,
        drop=scores.drop if scores else None,
        n=held.n,
        agreement=scores.agreement if scores else None,
        drop_upper=scores.estimate.upper if scores else None,
        confidence=spec.tolerance.confidence,
        samples_needed=decision.samples_needed,
        worst_class=scores.worst[0] if scores else None,
        worst_class_recall_drop=scores.worst[1] if scores else None,
        guards=judged.guards,
        evidence=evidence,
    )


NOT_EVALUATED = "not-evaluated/"


def not_evaluated(
    spec: JobSpec, ingest: IngestResult, baseline: BaselineResult, candidate: CandidateResult, reason: str
) -> GateResult:
    """A failing verdict for a candidate the engine did not send to the gate (``reason`` says why). It is
    not recorded: the gate stage itself would judge the same candidate on its merits."""
    return GateResult(
        key=f"{NOT_EVALUATED}{candidate.key}",
        candidate_key=candidate.key,
        candidate_sha256=candidate.onnx.sha256 if candidate.onnx else None,
        baseline_sha256=baseline.onnx.sha256,
        dataset_sha256=ingest.dataset.sha256,
        passed=False,
        reason=reason,
        metric_name=baseline.metric_name,
        baseline_metric=baseline.metric,
        candidate_metric=None,
        drop=None,
        allowed_drop=spec.tolerance.allowed_drop(baseline.metric),
        n=0,
        agreement=None,
    )


def is_not_evaluated(verdict: GateResult) -> bool:
    """Whether ``verdict`` is `not_evaluated`'s: the candidate never went to the gate."""
    return verdict.key.startswith(NOT_EVALUATED)
