"""Gate: is the candidate still accurate? Measured on the artifact that ships (ONNX, under ONNX Runtime
with the target profile's threads), on the held-out split, paired with the baseline's predictions.

This stage runs the models and keeps the records; what is measured and how it is decided is in
``squeezeflow.gate``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from squeezeflow.gate.evidence import evidence_document, tracking_metrics, tracking_tags
from squeezeflow.gate.guards import agreement_check, class_recall_check, device_check, robustness_check
from squeezeflow.gate.perturb import default_perturbations, perturb
from squeezeflow.gate.rules import Decision, Judgement, tolerance_decision, with_guards
from squeezeflow.gate.scoring import HeldOut, score
from squeezeflow.gate.verdicts import measured, not_built, verdict_key
from squeezeflow.metrics import resolve_metric
from squeezeflow.results import (
    BaselineResult,
    CandidateResult,
    GateResult,
    GuardCheck,
    IngestResult,
    content_key,
)
from squeezeflow.runtime import predict_logits
from squeezeflow.spec.gate import RobustnessCheck
from squeezeflow.spec.job import JobSpec
from squeezeflow.stages.baseline import check_outputs, load_npy
from squeezeflow.stages.context import StageContext
from squeezeflow.stages.device_eval import device_agreement, submit_evaluation, wait_for_evaluation
from squeezeflow.store.artifacts import ArtifactRef

log = logging.getLogger(__name__)


def gate(
    spec: JobSpec,
    ingest: IngestResult,
    baseline: BaselineResult,
    candidate: CandidateResult,
    ctx: StageContext,
) -> GateResult:
    """Decide whether ``candidate`` keeps the primary metric within the spec's tolerance: load what it
    is judged on, score and judge it, then record the verdict and its evidence. A verdict already
    recorded for the same inputs is returned as it was."""
    key = verdict_key(spec, ingest, baseline, candidate)
    recorded = recorded_verdict(key, baseline, candidate, ctx)
    if recorded is not None:
        return recorded
    if candidate.status != "ok" or candidate.onnx is None:
        return record(not_built(spec, ingest, baseline, candidate, key), baseline, candidate, ctx)
    held = load(spec, ingest, baseline, candidate.onnx, ctx)
    judged = judge(spec, ingest, baseline, candidate, held, ctx)
    evidence = publish(spec, ingest, baseline, candidate, held, judged, ctx)
    return record(
        measured(spec, ingest, baseline, candidate, key, held, judged, evidence), baseline, candidate, ctx
    )


def recorded_verdict(
    key: str, baseline: BaselineResult, candidate: CandidateResult, ctx: StageContext
) -> GateResult | None:
    """The verdict recorded under ``key``, if any, its candidate tagged again with it (a retry may have
    died between the record and the tags: tagging again is idempotent)."""
    recorded = ctx.store.read_record("gate", key)
    if recorded is None:
        return None
    verdict = GateResult.model_validate(recorded)
    mark_candidate(ctx, baseline, candidate, verdict, "passed" if verdict.passed else "failed")
    return verdict


def load(
    spec: JobSpec, ingest: IngestResult, baseline: BaselineResult, model: ArtifactRef, ctx: StageContext
) -> HeldOut:
    """The held-out split, the candidate's outputs on it (its ONNX ``model`` run here) and the
    baseline's (as the baseline stage stored them)."""
    ds = ctx.job_dataset(ingest.dataset)
    test = ds.split("test")
    path = ctx.store.fetch(model, ctx.cache)
    logits = predict_logits(path, test.x, threads=spec.target.intra_op_threads)
    return HeldOut(
        model=model,
        model_path=path,
        x=test.x,
        y=test.y,
        logits=logits,
        base_logits=load_npy(ctx.store.fetch(baseline.logits, ctx.cache)),
        num_classes=ds.meta.num_classes,
        class_names=ds.meta.class_names,
    )


def judge(
    spec: JobSpec,
    ingest: IngestResult,
    baseline: BaselineResult,
    candidate: CandidateResult,
    held: HeldOut,
    ctx: StageContext,
) -> Judgement:
    """Score the candidate and decide: the tolerance rule on the primary metric, then the secondary
    guards (a failing one fails a candidate the rule passed). Unusable outputs fail it unscored."""
    try:
        check_outputs(held.logits, held.num_classes, f"candidate {candidate.label}")
    except Exception as err:
        return Judgement(scores=None, decision=Decision(passed=False, reason=str(err)), guards=[])
    scores = score(spec, baseline, held)
    decision = tolerance_decision(spec, baseline, scores, held.n)
    guards = [
        class_recall_check(spec.tolerance, scores.worst),
        agreement_check(spec.tolerance, scores.agreement),
    ]
    guards += robustness_checks(spec, baseline, held, ctx)
    guards += on_device_checks(spec, ingest, baseline, held.model, held.y, held.logits, ctx)
    return Judgement(scores=scores, decision=with_guards(decision, guards), guards=guards)


def publish(
    spec: JobSpec,
    ingest: IngestResult,
    baseline: BaselineResult,
    candidate: CandidateResult,
    held: HeldOut,
    judged: Judgement,
    ctx: StageContext,
) -> ArtifactRef:
    """Keep the verdict's evidence document in the store and on the candidate's MLflow run, with the
    run's gate metrics and tags; the stored document's reference."""
    evidence = evidence_document(spec, ingest, baseline, candidate, held, judged)
    evidence_ref = ctx.store.put_bytes(json.dumps(evidence, indent=2).encode(), suffix=".json")
    ctx.tracker.log_text(candidate.run_id, json.dumps(evidence, indent=2), "gate/evidence.json")
    ctx.tracker.log(
        candidate.run_id,
        metrics=tracking_metrics(spec, baseline, held, judged),
        tags=tracking_tags(judged),
        model_id=candidate.model_id,
    )
    log.info("gate %s: %s", candidate.label, judged.decision.reason)
    return evidence_ref


def record(
    verdict: GateResult, baseline: BaselineResult, candidate: CandidateResult, ctx: StageContext
) -> GateResult:
    """Record ``verdict`` and tag what the store holds of its candidate with it; ``verdict``."""
    ctx.store.write_record("gate", verdict.key, verdict)
    mark_candidate(ctx, baseline, candidate, verdict, "passed" if verdict.passed else "failed")
    return verdict


def robustness_checks(
    spec: JobSpec, baseline: BaselineResult, held: HeldOut, ctx: StageContext
) -> list[GuardCheck]:
    """When the spec asks for it: baseline and candidate scored on the first ``samples`` held-out inputs
    under each perturbation, one guard a perturbation."""
    rob = spec.tolerance.robustness
    if rob is None:
        return []
    checks = []
    metric_fn = resolve_metric(baseline.metric_name)
    xs, ys = held.x[: rob.samples], held.y[: rob.samples]
    threads = spec.target.intra_op_threads
    base_path = ctx.store.fetch(baseline.onnx, ctx.cache)
    for i, kind in enumerate(rob.perturbations or default_perturbations(xs)):
        xp = perturb(xs, kind, rob.severity, seed=spec.search.seed + i, pad_token_id=rob.pad_token_id)
        base_m = metric_fn(ys, _baseline_logits(base_path, baseline.onnx.sha256, xp, kind, rob, ctx, threads))
        cand_m = metric_fn(ys, predict_logits(held.model_path, xp, threads=threads))
        checks.append(robustness_check(rob, kind, baseline.metric_name, len(ys), base_m, cand_m))
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
    metric_fn = resolve_metric(baseline.metric_name)
    for profile in spec.devices:
        if not profile.evaluate_on_device:
            continue
        key = submit_evaluation(model, ingest.dataset.engine_uri, ingest.dataset.engine_sha256, profile, ctx)
        device = wait_for_evaluation(ctx, key, profile)
        same, max_diff = device_agreement(logits, device)
        device_metric = metric_fn(y, device) if device.shape == logits.shape else float("nan")
        checks.append(
            device_check(spec.tolerance, profile, baseline.metric_name, len(y), same, max_diff, device_metric)
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
