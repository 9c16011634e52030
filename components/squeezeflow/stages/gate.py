"""Gate: is the candidate still accurate? Measured on the artifact that ships (ONNX, under ONNX Runtime
with the target profile's threads), on the held-out split, paired with the baseline's predictions."""

from __future__ import annotations

import json
import logging
import math

import numpy as np

from squeezeflow.gate_stats import paired_bootstrap_drop, samples_needed
from squeezeflow.metrics import METRICS, per_sample_correct
from squeezeflow.models import predict_logits
from squeezeflow.results import BaselineResult, CandidateResult, GateResult, IngestResult, content_key
from squeezeflow.spec import JobSpec
from squeezeflow.stages.baseline import check_outputs, load_npy
from squeezeflow.stages.context import StageContext

log = logging.getLogger(__name__)


def worst_class_recall_drop(y: np.ndarray, base_logits: np.ndarray, logits: np.ndarray) -> tuple[int, float]:
    """The class whose recall (on the held-out split) the candidate lowers most, and by how much."""
    base_pred, pred = np.argmax(base_logits, 1), np.argmax(logits, 1)
    worst, worst_drop = 0, -1.0
    for c in np.unique(y):
        mask = y == c
        d = float(np.mean(base_pred[mask] == c) - np.mean(pred[mask] == c))
        if d > worst_drop:
            worst, worst_drop = int(c), d
    return worst, worst_drop


def gate(
    spec: JobSpec,
    ingest: IngestResult,
    baseline: BaselineResult,
    candidate: CandidateResult,
    ctx: StageContext,
) -> GateResult:
    """Decide whether ``candidate`` keeps the primary metric within the spec's tolerance."""
    key = content_key("gate", candidate.key, spec.tolerance.model_dump_json(), baseline.onnx.sha256)
    recorded = ctx.store.read_record("gate", key)
    if recorded is not None:
        return GateResult.model_validate(recorded)

    allowed = spec.tolerance.allowed_drop(baseline.metric)
    common = {
        "key": key,
        "candidate_key": candidate.key,
        "baseline_sha256": baseline.onnx.sha256,
        "dataset_sha256": ingest.dataset.sha256,
        "metric_name": baseline.metric_name,
        "baseline_metric": baseline.metric,
        "allowed_drop": allowed,
    }
    if candidate.status != "ok" or candidate.onnx is None:
        result = GateResult(
            **common,
            candidate_sha256=None,
            passed=False,
            reason=f"candidate was not built: {candidate.error}",
            candidate_metric=None,
            drop=None,
            n=0,
            agreement=None,
        )
        ctx.store.write_record("gate", key, result)
        return result

    ds = ctx.dataset(spec.data.uri)
    test = ds.split("test")
    path = ctx.store.fetch(candidate.onnx, ctx.cache)
    logits = predict_logits(path, test.x, threads=spec.target.intra_op_threads)
    base_logits = load_npy(ctx.store.fetch(baseline.logits, ctx.cache))
    estimate = None
    needed = None
    worst: tuple[int, float] | None = None
    try:
        check_outputs(logits, ds.meta.num_classes, f"candidate {candidate.label}")
    except Exception as err:
        metric, drop, agreement, passed, reason = None, None, None, False, str(err)
    else:
        metric = METRICS[baseline.metric_name](test.y, logits)
        drop = baseline.metric - metric
        agreement = float(np.mean(np.argmax(logits, 1) == np.argmax(base_logits, 1)))
        tol = spec.tolerance
        estimate = paired_bootstrap_drop(
            per_sample_correct(test.y, base_logits),
            per_sample_correct(test.y, logits),
            confidence=tol.confidence,
            samples=tol.bootstrap_samples,
            seed=spec.search.seed,
        )
        bound = estimate.upper if tol.method == "bootstrap" else drop
        n = len(test)
        if tol.method == "bootstrap" and 1.0 / n > allowed:
            passed = False
            needed = math.ceil(1.0 / allowed) if allowed > 0 else None
            reason = (
                f"the held-out split has only n={n} samples: one sample moves {baseline.metric_name} by "
                f"{1.0 / n:.4f}, more than the allowed drop {allowed:.4f}"
                + (f"; at least {needed} samples are needed" if needed else "")
            )
        else:
            passed = bound <= allowed + 1e-12
            what = (
                f"upper {tol.confidence:.0%} bound of the drop {bound:+.4f}"
                if tol.method == "bootstrap"
                else f"drop {bound:+.4f}"
            )
            reason = (
                f"{baseline.metric_name} {metric:.4f} vs baseline {baseline.metric:.4f} (drop {drop:+.4f}); "
                f"{what} {'within' if passed else 'exceeds'} the allowed {allowed:.4f} ({tol.mode}) on n={n}"
            )
            if not passed and tol.method == "bootstrap" and drop <= allowed:
                needed = samples_needed(estimate, allowed)
                reason += (
                    f": the measured drop is within tolerance but n={n} held-out samples cannot show it at "
                    f"{tol.confidence:.0%} confidence"
                    + (f"; about {needed} would be needed" if needed else "")
                )
    if metric is not None:
        worst = worst_class_recall_drop(test.y, base_logits, logits)
        limit = spec.tolerance.max_class_recall_drop
        if limit is not None and worst[1] > limit + 1e-12 and passed:
            passed = False
            reason += (
                f"; but class {worst[0]} loses {worst[1]:.4f} of its recall, more than the allowed "
                f"{limit:.4f} per class"
            )
    evidence = {
        "candidate": candidate.label,
        "candidate_key": candidate.key,
        "candidate_sha256": candidate.onnx.sha256,
        "baseline_sha256": baseline.onnx.sha256,
        "dataset_sha256": ingest.dataset.sha256,
        "metric": baseline.metric_name,
        "baseline_metric": baseline.metric,
        "candidate_metric": metric,
        "drop": drop,
        "allowed_drop": allowed,
        "tolerance": spec.tolerance.model_dump(),
        "n": len(test),
        "top1_agreement": agreement,
        "method": spec.tolerance.method,
        "confidence": spec.tolerance.confidence,
        "drop_lower": estimate.lower if estimate else None,
        "drop_upper": estimate.upper if estimate else None,
        "discordant_samples": estimate.discordant if estimate else None,
        "samples_needed": needed,
        "worst_class": worst[0] if worst else None,
        "worst_class_recall_drop": worst[1] if worst else None,
        "passed": passed,
        "reason": reason,
        "runtime": f"onnxruntime CPUExecutionProvider, {spec.target.intra_op_threads} threads",
    }
    evidence_ref = ctx.store.put_bytes(json.dumps(evidence, indent=2).encode(), suffix=".json")
    ctx.tracker.log_text(candidate.run_id, json.dumps(evidence, indent=2), "gate/evidence.json")
    metrics = {"gate.n": float(len(test)), "gate.allowed_drop": allowed}
    if worst is not None:
        metrics["gate.worst_class_recall_drop"] = worst[1]
    if estimate is not None:
        metrics.update({"gate.drop_upper": estimate.upper, "gate.drop_lower": estimate.lower})
    if metric is not None and drop is not None and agreement is not None:
        metrics.update(
            {baseline.metric_name: metric, f"{baseline.metric_name}_drop": drop, "top1_agreement": agreement}
        )
    ctx.tracker.log(
        candidate.run_id,
        metrics=metrics,
        tags={"squeezeflow.gate": "passed" if passed else "failed", "squeezeflow.gate_reason": reason[:5000]},
        model_id=candidate.model_id,
    )
    log.info("gate %s: %s", candidate.label, reason)
    result = GateResult(
        **common,
        candidate_sha256=candidate.onnx.sha256,
        passed=passed,
        reason=reason,
        candidate_metric=metric,
        drop=drop,
        n=len(test),
        agreement=agreement,
        drop_upper=estimate.upper if estimate else None,
        confidence=spec.tolerance.confidence,
        samples_needed=needed,
        worst_class=worst[0] if worst else None,
        worst_class_recall_drop=worst[1] if worst else None,
        evidence=evidence_ref,
    )
    if candidate.onnx.sha256 != baseline.onnx.sha256:
        # A bucket lifecycle rule may expire what failed (infra/terraform: squeezeflow-status=failed).
        ctx.store.mark(candidate.onnx, "passed" if passed else "failed")
    ctx.store.write_record("gate", key, result)
    return result
