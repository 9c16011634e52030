"""Verdicts the gate gives without measuring: for a candidate the engine never sent to it."""

from __future__ import annotations

from squeezeflow.results import BaselineResult, CandidateResult, GateResult, IngestResult
from squeezeflow.spec import JobSpec

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
