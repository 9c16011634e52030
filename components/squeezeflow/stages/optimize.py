"""Optimize: apply one recipe (an ordered list of passes) to the baseline, producing one candidate.

One call is one candidate, so an Airflow mapped task or a Kubeflow ParallelFor iteration can run it
alone. A pass that cannot handle the model fails that candidate with its reason; the job goes on.
"""

from __future__ import annotations

import json
import logging
import time
from types import UnionType
from typing import Any, Literal

from squeezeflow.errors import InfrastructureError, ModelLoadError, PassError, TrialAbandoned
from squeezeflow.metrics import resolve_metric
from squeezeflow.models.huggingface import RawTextServing, raw_text_serving
from squeezeflow.models.sources import check_onnx, export_onnx, load_torch_model
from squeezeflow.onnx_heads import class_labels, with_prediction_heads, without_prediction_heads
from squeezeflow.passes import ModelState, PassContext, get_pass
from squeezeflow.recovery import RecoveryCheck
from squeezeflow.results import BaselineResult, CandidateResult, IngestResult, content_key
from squeezeflow.runtime import predict_logits
from squeezeflow.spec.job import JobSpec
from squeezeflow.spec.search import Recipe
from squeezeflow.stages.baseline import measure_onnx
from squeezeflow.stages.context import StageContext
from squeezeflow.training_device import TrainingSetup, resolve_training

log = logging.getLogger(__name__)


def _raw_text_serving(
    spec: JobSpec, ingest: IngestResult, ctx: StageContext, key: str
) -> RawTextServing | None:
    """For a Hugging Face text classifier: its tokenizer and text settings, so that the candidate's
    MLflow model answers raw text as a pyfunc (`squeezeflow.tracking.raw_text_pyfunc`); else None."""
    if spec.model.format != "huggingface" or ingest.dataset.input_dtype != "int64":
        return None
    ds = ctx.job_dataset(ingest.dataset)
    return raw_text_serving(
        spec.model.uri,
        ctx.store.fetch(ingest.model_source, ctx.cache),
        ctx.scratch(f"candidate-{key}") / "tokenizer",
        max_length=ingest.dataset.input_shape[0],
        class_names=class_labels(ds.meta.class_names, ds.meta.num_classes),
        example_ids=ds.split("test").x[:2],
    )


def candidate_key(job_key: str, recipe: Recipe) -> str:
    return content_key("candidate", job_key, recipe.key())


def recovery_check(spec: JobSpec, baseline: BaselineResult) -> RecoveryCheck | None:
    """The rule that abandons a candidate whose recovery training cannot reach the gate, and stops one
    back to the baseline when asked (``search.abandon``), or None when it does neither. Recovery is
    judged on top-1 validation accuracy, so only a job whose metric is top1_accuracy has one; the floor
    is the baseline's validation metric less the gate's allowed drop (relative tolerances taken of the
    validation metric)."""
    rule = spec.search.abandon
    if not (rule.enabled or rule.stop_recovered) or spec.task.metric != "top1_accuracy":
        return None
    allowed = spec.tolerance.allowed_drop(baseline.val_metric)
    return RecoveryCheck(
        floor=baseline.val_metric - allowed,
        allowed_drop=allowed,
        after=rule.after,
        abandon=rule.enabled,
        tolerances=rule.tolerances,
        slack=rule.slack,
        stop_recovered=rule.stop_recovered,
    )


def _apply(
    recipe: Recipe,
    spec: JobSpec,
    ingest: IngestResult,
    baseline: BaselineResult,
    ctx: StageContext,
    key: str,
    notes: dict[str, Any],
    deadline: float | None,
    training: TrainingSetup,
) -> ModelState:
    ds = ctx.job_dataset(ingest.dataset)
    work = ctx.scratch(f"candidate-{key}")
    needs_torch = get_pass(recipe.steps[0].name).input_kind == "torch"
    if needs_torch:
        if spec.model.format == "onnx":
            raise PassError(recipe.steps[0].name, "needs a PyTorch model, but the baseline is ONNX")
        src = ctx.store.fetch(ingest.model_source, ctx.cache)
        state = ModelState(torch_module=load_torch_model(spec.model, src))
    else:
        # The passes work on the bare classifier; the candidate gets the heads back when it is built.
        bare = work / "baseline.bare.onnx"
        state = ModelState(
            onnx_path=without_prediction_heads(ctx.store.fetch(baseline.onnx, ctx.cache), bare)
        )
    train, val = ds.split("train"), ds.split("val")
    check = recovery_check(spec, baseline)
    teacher = None
    if (
        any(s.name == "finetune" and s.params.get("distill") for s in recipe.steps)
        and spec.model.format != "onnx"
    ):
        teacher = load_torch_model(spec.model, ctx.store.fetch(ingest.model_source, ctx.cache))
    for i, step in enumerate(recipe.steps):
        cls = get_pass(step.name)
        step_dir = work / f"{i:02d}-{step.name}"
        step_dir.mkdir(parents=True, exist_ok=True)
        if cls.input_kind == "onnx" and state.kind == "torch":
            state = ModelState(
                onnx_path=export_onnx(
                    state.torch_module,
                    ingest.dataset.input_shape,
                    step_dir / "export.onnx",
                    dtype=train.x.dtype,
                )
            )
        pctx = PassContext(
            workdir=step_dir,
            input_shape=ingest.dataset.input_shape,
            train_x=train.x,
            train_y=train.y,
            val_x=val.x,
            val_y=val.y,
            seed=spec.search.seed,
            teacher=teacher,
            baseline_val_metric=baseline.val_metric,
            allowed_drop=spec.tolerance.allowed_drop(baseline.metric),
            notes=notes,
            deadline=deadline,
            recovery_check=check,
            training=training,
        )
        state = cls().run(state, cls.Config.model_validate(step.params), pctx)
    if state.kind == "torch":
        state = ModelState(
            onnx_path=export_onnx(
                state.torch_module, ingest.dataset.input_shape, work / "final.onnx", dtype=train.x.dtype
            )
        )
    return state


def _note_values(notes: dict[str, Any], kind: type | UnionType) -> dict[str, Any]:
    """The passes' notes of type ``kind``, flattened to ``group.key``."""
    return {
        f"{group}.{k}": v
        for group, values in notes.items()
        if isinstance(values, dict)
        for k, v in values.items()
        if isinstance(v, kind)
    }


def _note_metrics(notes: dict[str, Any]) -> dict[str, float]:
    """Numbers the passes reported (MACs before/after pruning, fine-tuning accuracy...) as metrics."""
    return {k: float(v) for k, v in _note_values(notes, int | float).items()}


def _note_tags(notes: dict[str, Any]) -> dict[str, str]:
    """What the passes reported in words (the layers pruning kept whole...) as run tags, so a reader of
    the candidate's run sees them beside its status."""
    return {f"squeezeflow.{k}": v[:5000] for k, v in _note_values(notes, str).items()}


def training_setup(spec: JobSpec) -> TrainingSetup:
    """The spec's ``training`` section resolved for this machine; `DeviceUnavailableError` (exit 2) for
    ``device: cuda`` where PyTorch sees no GPU."""
    t = spec.training
    return resolve_training(t.device, t.precision, t.deterministic)


def optimize(
    spec: JobSpec,
    ingest: IngestResult,
    baseline: BaselineResult,
    recipe: Recipe,
    ctx: StageContext,
    deadline: float | None = None,
) -> CandidateResult:
    """Build the candidate for ``recipe``. Idempotent: the same job and recipe return the recorded result.
    ``deadline`` (epoch seconds): when the passes' training must end (see `search.rounds.trial_deadline`)."""
    key = candidate_key(ingest.job_key, recipe)
    # training.device cuda on a machine without a GPU: refused here, before any work (exit 2)
    training = training_setup(spec)
    recorded = ctx.store.read_record("optimize", key)
    if recorded is not None:
        cached = CandidateResult.model_validate(recorded)
        if cached.onnx is None or ctx.store.has(cached.onnx):
            return cached
        # The bucket's lifecycle rule expired this (failed) candidate's model: build it again.
        log.info("candidate %s: its recorded model %s is gone; rebuilding", recipe.label, cached.onnx.uri)

    run_id = ctx.tracker.candidate_run(
        ingest.parent_run_id,
        key,
        run_name=recipe.label,
        tags={"squeezeflow.recipe_key": recipe.key(), "squeezeflow.job_key": ingest.job_key},
    )
    params: dict[str, Any] = {
        "recipe": json.dumps(recipe.model_dump(mode="json")),
        "recipe.name": recipe.label,
    }
    for i, step in enumerate(recipe.steps):
        params[f"step{i}.pass"] = step.name
        for k, v in step.params.items():
            params[f"step{i}.{k}"] = v
    if any(s.name == "finetune" for s in recipe.steps):
        params["training.device"] = training.device
        params["training.precision"] = training.precision
    ctx.tracker.log(run_id, params=params)

    t0 = time.perf_counter()
    error: str | None = None
    abandoned = False
    notes: dict[str, Any] = {}
    try:
        state = _apply(recipe, spec, ingest, baseline, ctx, key, notes, deadline, training)
        assert state.onnx_path is not None
        check_onnx(state.onnx_path, f"candidate {recipe.label}")
        meta = ctx.job_dataset(ingest.dataset).meta
        state = ModelState(
            onnx_path=with_prediction_heads(
                state.onnx_path,
                ctx.scratch(f"candidate-{key}") / "candidate.served.onnx",
                class_labels(meta.class_names, meta.num_classes),
            )
        )
    except InfrastructureError:
        raise
    except TrialAbandoned as err:
        error, abandoned = err.reason, True
    except (PassError, ModelLoadError) as err:
        error = str(err)
    except Exception as err:  # an unexpected failure of one pass must not end the search
        log.exception("candidate %s failed", recipe.label)
        error = f"{type(err).__name__}: {str(err)[:400]}"
    seconds = time.perf_counter() - t0

    if error is not None:
        # An abandoned trial is given up on purpose: its run says so (status, reason and the numbers
        # that decided it), is KILLED rather than FAILED, and the search goes on with the time it saved.
        status: Literal["failed", "abandoned"] = "abandoned" if abandoned else "failed"
        if abandoned:
            log.info("candidate %s %s", recipe.label, error)
        else:
            log.warning("candidate %s failed: %s", recipe.label, error)
        ctx.tracker.log(
            run_id,
            metrics={"optimize_seconds": seconds, **(_note_metrics(notes) if abandoned else {})},
            tags={"squeezeflow.status": status, "squeezeflow.error": error[:5000], **_note_tags(notes)},
        )
        ctx.tracker.finish(run_id, "KILLED" if abandoned else "FAILED")
        result = CandidateResult(
            key=key,
            job_key=ingest.job_key,
            recipe=recipe,
            recipe_key=recipe.key(),
            status=status,
            error=error,
            run_id=run_id,
            seconds=seconds,
            notes=notes,
        )
        ctx.store.write_record("optimize", key, result)
        return result

    assert state.onnx_path is not None
    measure = measure_onnx(state.onnx_path, ingest.dataset.input_shape)
    val = ctx.job_dataset(ingest.dataset).split("val")
    val_metric = resolve_metric(spec.task.metric)(
        val.y, predict_logits(state.onnx_path, val.x, threads=spec.target.intra_op_threads)
    )
    onnx_ref = ctx.store.put_file(state.onnx_path, suffix=".onnx")
    ds = ctx.job_dataset(ingest.dataset)
    model_id = ctx.tracker.log_onnx_model(
        run_id,
        state.onnx_path,
        name="candidate",
        input_example=ds.split("test").x[:2],
        tags={
            "squeezeflow.kind": "candidate",
            "squeezeflow.recipe": recipe.label,
            "squeezeflow.sha256": onnx_ref.sha256,
        },
        raw_text=_raw_text_serving(spec, ingest, ctx, key),
    )
    ctx.tracker.log(
        run_id,
        metrics={
            "optimize_seconds": seconds,
            "size_bytes": float(measure.size_bytes),
            "params": float(measure.params),
            "macs": float(measure.macs),
            "size_ratio": baseline.measure.size_bytes / measure.size_bytes,
            f"val_{spec.task.metric}": val_metric,
            **_note_metrics(notes),
        },
        tags={"squeezeflow.status": "built", "squeezeflow.sha256": onnx_ref.sha256, **_note_tags(notes)},
        model_id=model_id,
    )
    result = CandidateResult(
        key=key,
        job_key=ingest.job_key,
        recipe=recipe,
        recipe_key=recipe.key(),
        status="ok",
        onnx=onnx_ref,
        measure=measure,
        run_id=run_id,
        model_id=model_id,
        seconds=seconds,
        val_metric=val_metric,
        notes=notes,
    )
    ctx.store.write_record("optimize", key, result)
    return result
