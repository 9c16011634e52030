"""Stages called one at a time, as an orchestrator task would, on real data and a real model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from squeezeflow.models.sources import export_onnx
from squeezeflow.results import CandidateResult
from squeezeflow.spec.load import parse_spec
from squeezeflow.spec.search import PassStep, Recipe
from squeezeflow.stages import Settings, StageContext, baseline, gate, ingest
from tests.reference import job_doc, tiny_module

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> StageContext:
    tmp = tmp_path_factory.mktemp("stages")
    return StageContext.open(
        Settings(artifacts=str(tmp / "a"), tracking_uri=f"sqlite:///{tmp / 'm.db'}", workdir=tmp / "w"),
        "stages",
    )


@pytest.fixture(scope="module")
def model_formats(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("formats")
    m = tiny_module(tiny_model)
    example = torch.zeros(2, 1, 28, 28)
    torch.jit.save(torch.jit.trace(m, example), tmp / "tiny.ts")
    ep = torch.export.export(m, (example,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(ep, tmp / "tiny.pt2")
    export_onnx(m, [1, 28, 28], tmp / "tiny.onnx")
    return {"torchscript": tmp / "tiny.ts", "exported_program": tmp / "tiny.pt2", "onnx": tmp / "tiny.onnx"}


def test_every_model_format_gives_the_same_baseline_metric(
    ctx: StageContext, tiny_model: Path, animal_mnist: Path, model_formats: dict[str, Path]
) -> None:
    metrics = {}
    state_dict_spec = parse_spec(job_doc(tiny_model, animal_mnist, name="stages"))
    metrics["state_dict"] = baseline(state_dict_spec, ingest(state_dict_spec, ctx), ctx).metric
    for fmt, path in model_formats.items():
        doc = job_doc(tiny_model, animal_mnist, name="stages")
        doc["model"] = {"format": fmt, "uri": str(path)}
        spec = parse_spec(doc)
        metrics[fmt] = baseline(spec, ingest(spec, ctx), ctx).metric
    assert metrics["state_dict"] > 0.8
    assert all(v == pytest.approx(metrics["state_dict"], abs=1e-3) for v in metrics.values()), metrics


def _candidate(ctx: StageContext, job_key: str, onnx: Path, name: str, run_id: str) -> CandidateResult:
    ref = ctx.store.put_file(onnx, suffix=".onnx")
    return CandidateResult(
        key=f"{name}-key",
        job_key=job_key,
        recipe=Recipe(name=name, steps=[PassStep(name="ort_dynamic_int8")]),
        recipe_key="r",
        status="ok",
        onnx=ref,
        run_id=run_id,
        seconds=0.0,
    )


def test_gate_passes_an_unchanged_model_and_fails_one_whose_drop_exceeds_the_tolerance(
    ctx: StageContext, tiny_model: Path, animal_mnist: Path, tmp_path: Path
) -> None:
    spec = parse_spec(job_doc(tiny_model, animal_mnist, name="stages"))
    ing = ingest(spec, ctx)
    base = baseline(spec, ing, ctx)
    run_id = ctx.tracker.candidate_run(ing.parent_run_id, "gate-test", "gate-test", {})

    same = _candidate(ctx, ing.job_key, ctx.store.fetch(base.onnx, ctx.cache), "same", run_id)
    verdict = gate(spec, ing, base, same, ctx)
    assert verdict.passed and verdict.drop == 0.0 and verdict.agreement == 1.0
    # the evidence keeps the confusion matrix a Kubeflow run shows (so no step runs the model again)
    assert verdict.evidence is not None and verdict.candidate_metric is not None
    confusion = json.loads(ctx.store.read_bytes(verdict.evidence, ctx.cache))["confusion_matrix"]
    matrix = np.array(confusion["matrix"])
    assert matrix.shape == (ing.dataset.num_classes,) * 2 == (len(confusion["classes"]),) * 2
    assert matrix.sum() == verdict.n
    assert np.trace(matrix) / verdict.n == pytest.approx(verdict.candidate_metric)

    damaged = tiny_module(tiny_model)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in damaged.parameters():
            p.add_(torch.randn(p.shape, generator=g) * p.std() * 0.8)
    worse = _candidate(
        ctx, ing.job_key, export_onnx(damaged, [1, 28, 28], tmp_path / "damaged.onnx"), "worse", run_id
    )
    verdict = gate(spec, ing, base, worse, ctx)
    assert not verdict.passed
    assert verdict.drop is not None and verdict.drop > spec.tolerance.max_drop
    assert "exceeds the allowed" in verdict.reason and verdict.n == 1500


def test_gate_refuses_when_the_held_out_split_is_too_small_for_the_tolerance(
    ctx: StageContext, tiny_model: Path, animal_mnist: Path, tmp_path: Path
) -> None:
    import shutil

    import numpy as np

    small = tmp_path / "small-test-split"
    shutil.copytree(animal_mnist, small)
    with np.load(animal_mnist / "test.npz") as z:
        np.savez(small / "test.npz", x=z["x"][:60], y=z["y"][:60])
    spec = parse_spec(job_doc(tiny_model, small, name="stages"))
    ing = ingest(spec, ctx)
    base = baseline(spec, ing, ctx)
    run_id = ctx.tracker.candidate_run(ing.parent_run_id, "small-n", "small-n", {})
    same = _candidate(ctx, ing.job_key, ctx.store.fetch(base.onnx, ctx.cache), "same-small", run_id)
    verdict = gate(spec, ing, base, same, ctx)
    assert not verdict.passed
    assert "only n=60 samples" in verdict.reason and "at least 100 samples are needed" in verdict.reason
    assert verdict.samples_needed == 100


def test_a_candidate_whose_model_expired_from_the_store_is_rebuilt_not_reused(
    ctx: StageContext, tiny_model: Path, animal_mnist: Path
) -> None:
    """A bucket lifecycle rule may expire failed candidates' models; their optimize records stay."""
    from squeezeflow.stages import optimize

    spec = parse_spec(job_doc(tiny_model, animal_mnist, name="expired-candidate"))
    ing = ingest(spec, ctx)
    base = baseline(spec, ing, ctx)
    recipe = Recipe(name="int8-dynamic", steps=[PassStep(name="ort_dynamic_int8")])
    first = optimize(spec, ing, base, recipe, ctx)
    assert first.onnx is not None
    Path(first.onnx.uri).unlink()  # what the lifecycle rule does
    assert not ctx.store.has(first.onnx)
    again = optimize(spec, ing, base, recipe, ctx)
    assert again.onnx is not None and ctx.store.has(again.onnx)
    assert gate(spec, ing, base, again, ctx).candidate_metric is not None


class ConvGRU(torch.nn.Module):
    """Convolution features of an image's rows, read in order by a GRU, then a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1)
        )
        self.rnn = torch.nn.GRU(2 * 28, 16, batch_first=True)
        self.classifier = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.features(x).permute(0, 2, 1, 3).flatten(2)
        return self.classifier(self.rnn(rows)[0][:, -1])


def test_a_pruned_candidate_with_a_recurrent_head_is_built_and_its_run_names_the_layer_kept_whole(
    ctx: StageContext, small_data: Path, tmp_path: Path
) -> None:
    from squeezeflow.stages import optimize

    torch.manual_seed(0)
    torch.save(ConvGRU().state_dict(), tmp_path / "conv_gru.pt")
    doc = job_doc("-", small_data, name="recurrent-head")
    doc["model"] = {
        "format": "state_dict",
        "uri": str(tmp_path / "conv_gru.pt"),
        "factory": f"{__name__}:ConvGRU",
    }
    spec = parse_spec(doc)
    ing = ingest(spec, ctx)
    recipe = Recipe(
        name="prune50",
        steps=[
            PassStep(name="structured_prune", params={"ratio": 0.5}),
            PassStep(name="finetune", params={"epochs": 1}),
        ],
    )
    built = optimize(spec, ing, baseline(spec, ing, ctx), recipe, ctx)
    assert built.status == "ok" and built.onnx is not None and built.val_metric is not None, built.error
    kept = "rnn (GRU: Torch-Pruning cannot prune recurrent layers)"
    assert built.notes["prune"]["kept_whole"] == kept
    assert built.notes["prune"]["params_after"] < built.notes["prune"]["params_before"]
    assert ctx.tracker.run_tags(built.run_id)["squeezeflow.prune.kept_whole"] == kept


class _BlindToOneClass(torch.nn.Module):
    """The baseline, except that it never predicts class ``k`` (its logit is pushed far down)."""

    def __init__(self, inner: torch.nn.Module, k: int) -> None:
        super().__init__()
        self.inner, self.k = inner, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        penalty = torch.zeros(out.shape[1])
        penalty[self.k] = 1000.0
        return out - penalty


def test_the_per_class_recall_guard_fails_a_candidate_that_keeps_accuracy_but_drops_a_class(
    ctx: StageContext, tiny_model: Path, animal_mnist: Path, tmp_path: Path
) -> None:
    """Losing one class of ten costs about 9 points overall: a loose primary tolerance lets it through,
    the per-class guard does not."""
    doc = job_doc(tiny_model, animal_mnist, name="class-guard")
    doc["tolerance"] = {"mode": "absolute", "max_drop": 0.2, "method": "point"}
    loose = parse_spec(doc)
    guarded = parse_spec({**doc, "tolerance": {**doc["tolerance"], "max_class_recall_drop": 0.05}})
    ing = ingest(loose, ctx)
    base = baseline(loose, ing, ctx)
    run_id = ctx.tracker.candidate_run(ing.parent_run_id, "class-guard", "class-guard", {})
    blind = _BlindToOneClass(tiny_module(tiny_model), k=3).eval()
    cand = _candidate(
        ctx, ing.job_key, export_onnx(blind, [1, 28, 28], tmp_path / "blind.onnx"), "blind", run_id
    )

    reported = gate(loose, ing, base, cand, ctx)
    assert reported.passed, reported.reason
    assert reported.worst_class == 3 and reported.worst_class_recall_drop is not None
    assert reported.worst_class_recall_drop > 0.8

    enforced = gate(guarded, ingest(guarded, ctx), baseline(guarded, ingest(guarded, ctx), ctx), cand, ctx)
    assert not enforced.passed
    assert "class 3 loses" in enforced.reason
