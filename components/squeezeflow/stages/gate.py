"""Gate: is the candidate still accurate? Measured on the artifact that ships (ONNX, under ONNX Runtime
with the target profile's threads), on the held-out split, paired with the baseline's predictions."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from squeezeflow.gate.perturb import default_perturbations, perturb
from squeezeflow.gate.scoring import (
    CONFUSION_MAX_CLASSES,
    confusion_matrix,
    drop_estimate,
    worst_class_recall_drop,
)
from squeezeflow.gate.stats import DropEstimate, samples_needed
from squeezeflow.metrics import PER_SAMPLE, resolve_metric
from squeezeflow.results import (
    BaselineResult,
    CandidateResult,
    GateResult,
    GuardCheck,
    IngestResult,
    content_key,
)
from squeezeflow.runtime import predict_logits
from squeezeflow.spec import JobSpec, RobustnessCheck
from squeezeflow.stages.baseline import check_outputs, load_npy
from squeezeflow.stages.context import StageContext
from squeezeflow.stages.device_eval import device_agreement, submit_evaluation, wait_for_evaluation
from squeezeflow.store import ArtifactRef

log = logging.getLogger(__name__)


def secondary_guards(
    spec: JobSpec,
    baseline: BaselineResult,
    x: np.ndarray,
    y: np.ndarray,
    base_logits: np.ndarray,
    logits: np.ndarray,
    agreement: float,
    worst: tuple[int, float],
    candidate_path: Path,
    ctx: StageContext,
) -> list[GuardCheck]:
    """The gate's secondary conditions. Each is always measured and reported; it only decides when
    the spec sets its limit. ``worst`` is the class whose recall dropped most, and by how much."""
    tol = spec.tolerance
    checks: list[GuardCheck] = []
    cls, cls_drop = worst
    limit = tol.max_class_recall_drop
    ok = limit is None or cls_drop <= limit + 1e-12
    checks.append(
        GuardCheck(
            name="class_recall",
            value=cls_drop,
            limit=limit,
            passed=ok,
            detail=f"class {cls} loses {cls_drop:.4f} of its recall"
            + (f", more than the allowed {limit:.4f} per class" if not ok and limit is not None else ""),
        )
    )
    floor = tol.min_agreement
    ok = floor is None or agreement >= floor - 1e-12
    checks.append(
        GuardCheck(
            name="agreement",
            value=agreement,
            limit=floor,
            passed=ok,
            detail=f"top-1 agreement with the baseline {agreement:.4f}"
            + (f", below the required {floor:.4f}" if not ok and floor is not None else ""),
        )
    )
    rob = tol.robustness
    if rob is not None:
        metric_fn = resolve_metric(baseline.metric_name)
        xs, ys = x[: rob.samples], y[: rob.samples]
        threads = spec.target.intra_op_threads
        base_path = ctx.store.fetch(baseline.onnx, ctx.cache)
        for i, kind in enumerate(rob.perturbations or default_perturbations(xs)):
            xp = perturb(xs, kind, rob.severity, seed=spec.search.seed + i, pad_token_id=rob.pad_token_id)
            base_m = metric_fn(
                ys, _baseline_logits(base_path, baseline.onnx.sha256, xp, kind, rob, ctx, threads)
            )
            cand_m = metric_fn(ys, predict_logits(candidate_path, xp, threads=threads))
            d = base_m - cand_m
            ok = d <= rob.max_drop + 1e-12
            checks.append(
                GuardCheck(
                    name=f"robustness:{kind}",
                    value=d,
                    limit=rob.max_drop,
                    passed=ok,
                    detail=f"under {kind} (severity {rob.severity:g}, n={len(ys)}) {baseline.metric_name} "
                    f"{cand_m:.4f} vs baseline {base_m:.4f} (drop {d:+.4f})"
                    + (f", more than the allowed {rob.max_drop:.4f}" if not ok else ""),
                )
            )
    return checks


def on_device_checks(
    spec: JobSpec,
    ingest: IngestResult,
    baseline: BaselineResult,
    model: ArtifactRef,
    y: np.ndarray,
    logits: np.ndarray,
    ctx: StageContext,
) -> list[GuardCheck]:
    """For each remote profile with ``evaluate_on_device``: the device agent's held-out outputs for the
    candidate, compared with this machine's. Waits for the agent (or fails clearly after the profile's
    ``remote_timeout_s``): a candidate is never passed without the evidence the spec asked for."""
    checks = []
    floor = spec.tolerance.min_device_agreement
    metric_fn = resolve_metric(baseline.metric_name)
    for profile in spec.devices:
        if not profile.evaluate_on_device:
            continue
        key = submit_evaluation(model, spec.data.uri, ingest.dataset.sha256, profile, ctx)
        device = wait_for_evaluation(ctx, key, profile)
        same, max_diff = device_agreement(logits, device)
        device_metric = metric_fn(y, device) if device.shape == logits.shape else float("nan")
        ok = same >= floor - 1e-12
        checks.append(
            GuardCheck(
                name=f"device:{profile.name}",
                value=same,
                limit=floor,
                passed=ok,
                detail=f"on {profile.name} ({profile.execution_provider}) the top-1 answers equal this "
                f"machine's on {same:.4f} of n={len(y)} samples ({baseline.metric_name} there "
                f"{device_metric:.4f}, largest output difference {max_diff:.3g})"
                + ("" if ok else f", below the required {floor:.4f}"),
            )
        )
    return checks


def _baseline_logits(
    path: Path, sha256: str, xp: np.ndarray, kind: str, rob: RobustnessCheck, ctx: StageContext, threads: int
) -> np.ndarray:
    """The baseline's outputs on one perturbed set, computed once per process and baseline."""
    key = content_key("robustness", sha256, kind, rob.model_dump_json(), str(xp.shape), str(xp.dtype))
    cached = ctx.cache / "robustness" / f"{key}.npy"
    if cached.is_file():
        return load_npy(cached)
    out = predict_logits(path, xp, threads=threads)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    with tmp.open("wb") as f:
        np.save(f, out, allow_pickle=False)
    tmp.replace(cached)
    return out


def mark_candidate(
    ctx: StageContext,
    baseline: BaselineResult,
    candidate: CandidateResult,
    verdict: GateResult | None,
    status: str,
) -> None:
    """Tag what the store holds of ``candidate`` with its outcome, ``status``: failed (not built, failed
    the gate, or not sent to it), passed or promoted. A bucket lifecycle rule expires what failed
    (infra/terraform: squeezeflow-status=failed). That is its model, its optimize record and, when it
    has a recorded gate ``verdict``, the verdict's record and evidence. Bytes that are also the
    baseline's are never tagged."""
    if candidate.onnx is not None and candidate.onnx.sha256 != baseline.onnx.sha256:
        ctx.store.mark(candidate.onnx, status)
    ctx.store.mark_record("optimize", candidate.key, status)
    if verdict is not None:
        if verdict.evidence is not None:
            ctx.store.mark(verdict.evidence, status)
        ctx.store.mark_record("gate", verdict.key, status)


def gate(
    spec: JobSpec,
    ingest: IngestResult,
    baseline: BaselineResult,
    candidate: CandidateResult,
    ctx: StageContext,
) -> GateResult:
    """Decide whether ``candidate`` keeps the primary metric within the spec's tolerance."""
    # Everything the verdict depends on: the same candidate judged under another metric, baseline,
    # dataset, tolerance or bootstrap seed is a different verdict.
    key = content_key(
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
    recorded = ctx.store.read_record("gate", key)
    if recorded is not None:
        verdict = GateResult.model_validate(recorded)
        # A retry may have died between the record and the tags: tagging again is idempotent.
        mark_candidate(ctx, baseline, candidate, verdict, "passed" if verdict.passed else "failed")
        return verdict

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
        mark_candidate(ctx, baseline, candidate, result, "failed")
        return result

    ds = ctx.dataset(spec.data.uri)
    test = ds.split("test")
    path = ctx.store.fetch(candidate.onnx, ctx.cache)
    threads = spec.target.intra_op_threads
    logits = predict_logits(path, test.x, threads=threads)
    base_logits = load_npy(ctx.store.fetch(baseline.logits, ctx.cache))
    tol = spec.tolerance
    estimate: DropEstimate | None = None
    needed = None
    guards: list[GuardCheck] = []
    worst: tuple[int, float] | None = None
    confusion: dict[str, object] | None = None
    try:
        check_outputs(logits, ds.meta.num_classes, f"candidate {candidate.label}")
    except Exception as err:
        metric, drop, agreement, passed, reason = None, None, None, False, str(err)
    else:
        metric_fn = resolve_metric(baseline.metric_name)
        metric = metric_fn(test.y, logits)
        drop = baseline.metric - metric
        agreement = float(np.mean(np.argmax(logits, 1) == np.argmax(base_logits, 1)))
        estimate = drop_estimate(baseline.metric_name, test.y, base_logits, logits, spec)
        bound = estimate.upper if tol.method == "bootstrap" else drop
        n = len(test)
        if tol.method == "bootstrap" and baseline.metric_name in PER_SAMPLE and 1.0 / n > allowed:
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
        worst = worst_class_recall_drop(test.y, base_logits, logits)
        k = ds.meta.num_classes
        if k <= CONFUSION_MAX_CLASSES:
            confusion = {
                "classes": list(ds.meta.class_names or [str(i) for i in range(k)]),
                "matrix": confusion_matrix(test.y, logits, k),
            }
        guards = secondary_guards(
            spec, baseline, test.x, test.y, base_logits, logits, agreement, worst, path, ctx
        )
        guards += on_device_checks(spec, ingest, baseline, candidate.onnx, test.y, logits, ctx)
        failed = [g for g in guards if not g.passed]
        if failed and passed:
            passed = False
            reason += "; but " + "; ".join(g.detail for g in failed)
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
        "guards": [g.model_dump(mode="json") for g in guards],
        "passed": passed,
        "reason": reason,
        "runtime": f"onnxruntime CPUExecutionProvider, {threads} threads",
        "confusion_matrix": confusion,
    }
    evidence_ref = ctx.store.put_bytes(json.dumps(evidence, indent=2).encode(), suffix=".json")
    ctx.tracker.log_text(candidate.run_id, json.dumps(evidence, indent=2), "gate/evidence.json")
    metrics = {"gate.n": float(len(test)), "gate.allowed_drop": allowed}
    for g in guards:
        metrics[f"gate.{g.name.replace(':', '.')}"] = g.value
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
        guards=guards,
        evidence=evidence_ref,
    )
    ctx.store.write_record("gate", key, result)
    mark_candidate(ctx, baseline, candidate, result, "passed" if passed else "failed")
    return result
