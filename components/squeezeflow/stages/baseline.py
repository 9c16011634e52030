"""Baseline: load the user's model safely, export it to ONNX, and measure it on the held-out split."""

from __future__ import annotations

import contextlib
import io
import logging
import re
from pathlib import Path

import numpy as np

from squeezeflow.errors import ModelLoadError, SqueezeflowError
from squeezeflow.metrics import resolve_metric
from squeezeflow.models.sources import (
    check_batch_dimension,
    check_input_shape,
    check_onnx,
    export_onnx,
    load_torch_model,
)
from squeezeflow.onnx_heads import class_labels, with_prediction_heads, without_prediction_heads
from squeezeflow.results import BaselineResult, IngestResult, ModelMeasure, content_key
from squeezeflow.runtime import count_macs, count_params, predict_logits
from squeezeflow.spec.job import JobSpec
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
    what = f"model {spec.model.uri}"
    if spec.model.format == "onnx":
        # A model squeezeflow promoted: start again from its classifier, input rank included. A file
        # that does not load is left to check_onnx, which says why.
        with contextlib.suppress(Exception):
            src = without_prediction_heads(
                src, ctx.scratch(f"baseline-{ingest.job_key}") / "source.bare.onnx"
            )
        model = check_onnx(src, what)
        check_batch_dimension(
            model,
            what,
            "export it with a dynamic batch dimension (torch.onnx.export(..., dynamic_axes={'input': "
            "{0: 'batch'}}), or dynamic_shapes with dynamo=True)",
        )
        check_input_shape(model, ingest.dataset.input_shape, what)
        return src
    torch_model = load_torch_model(spec.model, src)
    out = ctx.scratch(f"baseline-{ingest.job_key}") / "baseline.onnx"
    export_onnx(torch_model, ingest.dataset.input_shape, out, dtype=ingest.dataset.input_dtype)
    exported = check_onnx(out, "the exported baseline")
    if spec.model.format == "exported_program":
        check_batch_dimension(
            exported,
            what,
            "an ExportedProgram keeps the batch size of its example input unless it is exported with "
            "dynamic_shapes (torch.export.export(model, (x,), dynamic_shapes=({0: Dim('batch')},)))",
        )
    return out


def evaluate_baseline(path: Path, x: np.ndarray, threads: int, what: str) -> np.ndarray:
    """The baseline's logits on ``x``; a model that fails inside ONNX Runtime (it needs more memory than
    the machine has, or a shape or type it computes is invalid) is the user's model failing: an input
    error naming it, never a traceback."""
    try:
        return predict_logits(path, x, threads=threads)
    except SqueezeflowError:
        raise
    except MemoryError as err:
        raise ModelLoadError(f"{what} needs more memory than this machine has to run: {err}") from None
    except Exception as err:  # ONNX Runtime's errors are pybind types with no common public base
        reason = " ".join(str(err).split())
        if "Failed to allocate memory" in reason:
            size = re.search(r"buffer of size (\d+)", reason)
            asked = f" ({int(size.group(1)):,} bytes for one tensor)" if size else ""
            raise ModelLoadError(
                f"{what} needs more memory than this machine can give it{asked}: ONNX Runtime could not "
                "allocate it while running the model on the held-out data"
            ) from None
        raise ModelLoadError(
            f"{what} fails in ONNX Runtime on the held-out data: {type(err).__name__}: {reason[:400]}"
        ) from None


def baseline(spec: JobSpec, ingest: IngestResult, ctx: StageContext) -> BaselineResult:
    """Export and evaluate the baseline. Idempotent per job."""
    key = content_key("baseline", ingest.job_key)
    recorded = ctx.store.read_record("baseline", key)
    if recorded is not None:
        return BaselineResult.model_validate(recorded)

    ds = ctx.job_dataset(ingest.dataset)
    # The file gated, benchmarked and promoted answers with class names and scores too.
    onnx_path = with_prediction_heads(
        baseline_onnx_path(spec, ingest, ctx),
        ctx.scratch(f"baseline-{ingest.job_key}") / "baseline.served.onnx",
        class_labels(ds.meta.class_names, ds.meta.num_classes),
    )
    test = ds.split("test")
    threads = spec.target.intra_op_threads
    what = f"model {spec.model.uri}"
    logits = evaluate_baseline(onnx_path, test.x, threads, what)
    check_outputs(logits, ds.meta.num_classes, f"model {spec.model.uri}")
    metric = resolve_metric(spec.task.metric)(test.y, logits)
    val = ds.split("val")
    val_metric = resolve_metric(spec.task.metric)(val.y, evaluate_baseline(onnx_path, val.x, threads, what))
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
