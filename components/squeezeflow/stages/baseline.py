"""Baseline: load the user's model safely, export it to ONNX, and measure it on the held-out split."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from squeezeflow.errors import ModelLoadError
from squeezeflow.metrics import resolve_metric
from squeezeflow.models import (
    check_input_shape,
    check_onnx,
    count_macs,
    count_params,
    export_onnx,
    load_torch_model,
    predict_logits,
)
from squeezeflow.results import BaselineResult, IngestResult, ModelMeasure, content_key
from squeezeflow.spec import JobSpec
from squeezeflow.stages.context import StageContext

log = logging.getLogger(__name__)


def measure_onnx(path: Path, input_shape: list[int]) -> ModelMeasure:
    return ModelMeasure(
        size_bytes=path.stat().st_size, params=count_params(path), macs=count_macs(path, input_shape)
    )


def check_outputs(logits: np.ndarray, num_classes: int, what: str) -> None:
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ModelLoadError(
            f"{what} outputs shape {list(logits.shape)}, but the dataset has {num_classes} classes: "
            f"expected [N, {num_classes}] scores"
        )
    if not np.isfinite(logits).all():
        raise ModelLoadError(f"{what} produces NaN or infinite outputs on the held-out data")


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def load_npy(path: Path) -> np.ndarray:
    return np.asarray(np.load(path, allow_pickle=False))


def baseline_onnx_path(spec: JobSpec, ingest: IngestResult, ctx: StageContext) -> Path:
    """The baseline as ONNX: the user's ONNX file as is, or an export of the PyTorch model."""
    src = ctx.store.fetch(ingest.model_source, ctx.cache)
    if spec.model.format == "onnx":
        model = check_onnx(src, f"model {spec.model.uri}")
        check_input_shape(model, ingest.dataset.input_shape, f"model {spec.model.uri}")
        return src
    model = load_torch_model(spec.model, src)
    out = ctx.scratch(f"baseline-{ingest.job_key}") / "baseline.onnx"
    export_onnx(model, ingest.dataset.input_shape, out, dtype=ingest.dataset.input_dtype)
    check_onnx(out, "the exported baseline")
    return out


def baseline(spec: JobSpec, ingest: IngestResult, ctx: StageContext) -> BaselineResult:
    """Export and evaluate the baseline. Idempotent per job."""
    key = content_key("baseline", ingest.job_key)
    recorded = ctx.store.read_record("baseline", key)
    if recorded is not None:
        return BaselineResult.model_validate(recorded)

    ds = ctx.dataset(spec.data.uri)
    onnx_path = baseline_onnx_path(spec, ingest, ctx)
    test = ds.split("test")
    threads = spec.target.intra_op_threads
    logits = predict_logits(onnx_path, test.x, threads=threads)
    check_outputs(logits, ds.meta.num_classes, f"model {spec.model.uri}")
    metric = resolve_metric(spec.task.metric)(test.y, logits)
    val = ds.split("val")
    val_metric = resolve_metric(spec.task.metric)(val.y, predict_logits(onnx_path, val.x, threads=threads))
    measure = measure_onnx(onnx_path, ingest.dataset.input_shape)
    onnx_ref = ctx.store.put_file(onnx_path, suffix=".onnx")
    logits_ref = ctx.store.put_bytes(npy_bytes(logits.astype(np.float32)), suffix=".npy")

    parent = ingest.parent_run_id
    model_id = ctx.tracker.log_onnx_model(
        parent,
        onnx_path,
        name="baseline",
        input_example=test.x[:2],
        tags={"squeezeflow.kind": "baseline", "squeezeflow.sha256": onnx_ref.sha256},
    )
    ctx.tracker.log(
        parent,
        metrics={
            f"baseline.{spec.task.metric}": metric,
            f"baseline.val_{spec.task.metric}": val_metric,
            "baseline.size_bytes": float(measure.size_bytes),
            "baseline.params": float(measure.params),
            "baseline.macs": float(measure.macs),
        },
        tags={"squeezeflow.baseline_onnx_sha256": onnx_ref.sha256},
        model_id=model_id,
    )
    log.info(
        "baseline %s = %.4f, %d bytes, %d MACs", spec.task.metric, metric, measure.size_bytes, measure.macs
    )
    result = BaselineResult(
        key=key,
        job_key=ingest.job_key,
        onnx=onnx_ref,
        logits=logits_ref,
        metric_name=spec.task.metric,
        metric=metric,
        val_metric=val_metric,
        measure=measure,
        parent_run_id=parent,
        model_id=model_id,
    )
    ctx.store.write_record("baseline", key, result)
    return result
