"""The evidence of a measured verdict: the JSON document kept in the artifact store and on the
candidate's MLflow run, and the run's ``gate.*`` metrics and tags."""

from __future__ import annotations

from squeezeflow.gate.rules import Judgement
from squeezeflow.gate.scoring import HeldOut
from squeezeflow.results import BaselineResult, CandidateResult, IngestResult
from squeezeflow.spec.job import JobSpec


def evidence_document(
    spec: JobSpec,
    ingest: IngestResult,
    baseline: BaselineResult,
    candidate: CandidateResult,
    held: HeldOut,
    judged: Judgement,
) -> dict[str, object]:
    """Everything the verdict rests on, in one JSON-ready document (its keys are a public format: the
    report, the Kubeflow step and users read them)."""
    scores, decision = judged.scores, judged.decision
    estimate = scores.estimate if scores else None
    worst = scores.worst if scores else None
    return {
        "candidate": candidate.label,
        "candidate_key": candidate.key,
        "candidate_sha256": held.model.sha256,
        "baseline_sha256": baseline.onnx.sha256,
        "dataset_sha256": ingest.dataset.sha256,
        "metric": baseline.metric_name,
        "baseline_metric": baseline.metric,
        "candidate_metric": scores.metric if scores else None,
        "drop": scores.drop if scores else None,
        "allowed_drop": spec.tolerance.allowed_drop(baseline.metric),
        "tolerance": spec.tolerance.model_dump(),
        "n": held.n,
        "top1_agreement": scores.agreement if scores else None,
        "method": spec.tolerance.method,
        "confidence": spec.tolerance.confidence,
        "drop_lower": estimate.lower if estimate else None,
        "drop_upper": estimate.upper if estimate else None,
        "discordant_samples": estimate.discordant if estimate else None,
        "samples_needed": decision.samples_needed,
        "worst_class": worst[0] if worst else None,
        "worst_class_recall_drop": worst[1] if worst else None,
        "guards": [g.model_dump(mode="json") for g in judged.guards],
        "passed": decision.passed,
        "reason": decision.reason,
        "runtime": f"onnxruntime CPUExecutionProvider, {spec.target.intra_op_threads} threads",
        "confusion_matrix": scores.confusion if scores else None,
    }


def tracking_metrics(
    spec: JobSpec, baseline: BaselineResult, held: HeldOut, judged: Judgement
) -> dict[str, float]:
    """The candidate run's metrics: ``gate.*`` (sample count, allowed drop, each guard's value, the
    bootstrap bounds) and, when it was scored, its metric, drop and agreement."""
    metrics = {"gate.n": float(held.n), "gate.allowed_drop": spec.tolerance.allowed_drop(baseline.metric)}
    for g in judged.guards:
        metrics[f"gate.{g.name.replace(':', '.')}"] = g.value
    scores = judged.scores
    if scores is not None:
        metrics.update({"gate.drop_upper": scores.estimate.upper, "gate.drop_lower": scores.estimate.lower})
        metrics.update(
            {
                baseline.metric_name: scores.metric,
                f"{baseline.metric_name}_drop": scores.drop,
                "top1_agreement": scores.agreement,
            }
        )
    return metrics


def tracking_tags(judged: Judgement) -> dict[str, str]:
    """The candidate run's verdict tags (the reason cut to 5000 characters)."""
    passed, reason = judged.decision.passed, judged.decision.reason
    return {"squeezeflow.gate": "passed" if passed else "failed", "squeezeflow.gate_reason": reason[:5000]}
