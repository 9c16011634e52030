"""The engine on a real model: int8 first, then the multi-objective search over pruning,
distillation and quantization; every trial is a tracked candidate; a retry replays the search."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from squeezeflow.errors import PassError
from squeezeflow.models import export_onnx, load_torch_model
from squeezeflow.passes import ModelState, PassContext, get_pass
from squeezeflow.pipeline import run_job
from squeezeflow.spec import parse_spec
from squeezeflow.stages import Settings
from tests.reference import job_doc

pytestmark = pytest.mark.integration


def test_search_builds_int8_then_pruned_candidates_and_a_retry_replays_it(
    tmp_path: Path, small_model: Path, animal_mnist: Path
) -> None:
    doc = job_doc(small_model, animal_mnist, name="search")
    doc["search"] = {
        "max_trials": 6,
        "max_seconds": 900,
        "patience": 5,
        "seed": 0,
        "space": {"prune_ratio": [0.5, 0.8], "quantize": ["int8"], "finetune_epochs": 1},
    }
    spec = parse_spec(doc)
    settings = Settings(
        artifacts=str(tmp_path / "a"), tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", workdir=tmp_path / "w"
    )
    result = run_job(spec, settings, progress=False)

    labels = [r.label for r in result.candidates]
    assert len(labels) == 6
    assert labels[:4] == [
        "int8-static-u8s8",
        "int8-static-u8s8-percentile",
        "int8-static-s8s8",
        "int8-dynamic",
    ]
    pruned = [r for r in result.candidates if r.label.startswith("prune")]
    assert len(pruned) == 2 and all(r.status == "ok" for r in pruned)
    assert all(r.size_bytes is not None and r.size_bytes < result.baseline_size_bytes / 3 for r in pruned)
    # whatever kind of candidate is the fastest eligible one is what gets promoted (pruned candidates
    # were once never trusted by promotion because their stored notes are key-sorted)
    eligible = [r for r in result.candidates if r.eligible and r.p50_ms is not None]
    assert eligible and result.promotion.promoted
    assert result.promotion.candidate_key == min(eligible, key=lambda r: r.p50_ms or 0).candidate_key

    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    nested = client.search_runs(
        [result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'"
    )
    assert len(nested) == 6
    pruned_run = next(r for r in nested if r.info.run_name == pruned[0].label)
    assert pruned_run.data.metrics["prune.macs_after"] < pruned_run.data.metrics["prune.macs_before"]
    assert "finetune.val_accuracy_after" in pruned_run.data.metrics

    runs_before = len(client.search_runs([result.experiment_id]))
    again = run_job(spec, settings, progress=False)
    assert [r.candidate_key for r in again.candidates] == [r.candidate_key for r in result.candidates]
    assert len(client.search_runs([result.experiment_id])) == runs_before
    assert again.promotion.model_dump() == result.promotion.model_dump()


def _aa_ctx(tmp_path: Path, animal_mnist: Path, floor_gap: float) -> PassContext:
    val = np.load(animal_mnist / "val.npz")
    train = np.load(animal_mnist / "train.npz")
    return PassContext(
        workdir=tmp_path,
        input_shape=[1, 28, 28],
        train_x=train["x"][:512],
        train_y=train["y"][:512],
        val_x=val["x"][:300],
        val_y=val["y"][:300],
        baseline_val_metric=1.0,
        allowed_drop=floor_gap,
    )


def test_accuracy_aware_int8_keeps_all_layers_quantized_when_accuracy_holds(
    tmp_path: Path, tiny_model: Path, animal_mnist: Path
) -> None:
    spec = parse_spec(job_doc(tiny_model, animal_mnist))
    onnx_path = export_onnx(load_torch_model(spec.model, tiny_model), [1, 28, 28], tmp_path / "tiny.onnx")
    cls = get_pass("ort_static_int8_accuracy_aware")
    ctx = _aa_ctx(tmp_path, animal_mnist, floor_gap=0.5)
    out = cls().run(ModelState(onnx_path=onnx_path), cls.Config(calibration_samples=64), ctx)
    assert out.onnx_path is not None and ctx.notes["accuracy_aware"]["fallback_nodes"] == 0


def test_accuracy_aware_int8_falls_back_layer_by_layer_and_says_when_it_cannot_hold(
    tmp_path: Path, tiny_model: Path, animal_mnist: Path
) -> None:
    spec = parse_spec(job_doc(tiny_model, animal_mnist))
    onnx_path = export_onnx(load_torch_model(spec.model, tiny_model), [1, 28, 28], tmp_path / "tiny.onnx")
    cls = get_pass("ort_static_int8_accuracy_aware")
    # a floor of 100% validation accuracy cannot be reached: the pass must try fallbacks, then say so
    ctx = _aa_ctx(tmp_path, animal_mnist, floor_gap=0.0)
    with pytest.raises(PassError, match=r"after keeping 2 of the most sensitive layers in float"):
        cls().run(
            ModelState(onnx_path=onnx_path), cls.Config(calibration_samples=64, max_fallback_nodes=2), ctx
        )
