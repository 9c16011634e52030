"""Every gate rule, each with a candidate that must pass and one that must fail, decided on real ONNX
models under ONNX Runtime on the held-out split of Animal-MNIST.

The failing candidates are built to break exactly one rule: a model that agrees less with the
baseline while keeping its accuracy, a model that only breaks under input noise, a model that is
worse under a non-mean metric (macro F1) or a user-supplied one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from squeezeflow.errors import SpecError
from squeezeflow.models.sources import export_onnx
from squeezeflow.results import CandidateResult, GateResult
from squeezeflow.spec.job import JobSpec
from squeezeflow.spec.load import parse_spec
from squeezeflow.spec.search import PassStep, Recipe
from squeezeflow.stages import Settings, StageContext, baseline, gate, ingest
from tests.reference import job_doc, tiny_module

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> StageContext:
    tmp = tmp_path_factory.mktemp("gate-rules")
    return StageContext.open(
        Settings(artifacts=str(tmp / "a"), tracking_uri=f"sqlite:///{tmp / 'm.db'}", workdir=tmp / "w"),
        "gate-rules",
    )


class _NoiseBrittle(torch.nn.Module):
    """The baseline on clean inputs; on inputs with many faint pixels (the silhouettes are mostly exact
    black or white, noise and blur fill the background with faint values) it answers the next class."""

    def __init__(self, inner: torch.nn.Module, threshold: float) -> None:
        super().__init__()
        self.inner = inner
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        faint = ((x > 1e-6) & (x < 0.2)).to(x.dtype).mean(dim=(1, 2, 3))
        noisy = (faint > self.threshold).to(out.dtype)[:, None]
        return out * (1 - noisy) + torch.roll(out, 1, dims=1) * noisy


def _faint(x: np.ndarray) -> np.ndarray:
    return ((x > 1e-6) & (x < 0.2)).mean(axis=(1, 2, 3))


def _damaged(model: Path, scale: float, seed: int = 0) -> torch.nn.Module:
    m = tiny_module(model)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * p.std() * scale)
    return m


class Judge:
    """Builds a baseline for a spec once and gates ONNX candidates against it."""

    def __init__(self, ctx: StageContext, model: Path, data: Path, tmp: Path) -> None:
        self.ctx, self.model, self.data, self.tmp = ctx, model, data, tmp

    def spec(self, tolerance: dict[str, Any], metric: str = "top1_accuracy") -> JobSpec:
        doc = job_doc(self.model, self.data, name="gate-rules")
        doc["tolerance"] = tolerance
        doc["task"] = {"metric": metric}
        return parse_spec(doc)

    def __call__(self, spec: JobSpec, module: torch.nn.Module | None, name: str) -> GateResult:
        ing = ingest(spec, self.ctx)
        base = baseline(spec, ing, self.ctx)
        if module is None:
            onnx = self.ctx.store.fetch(base.onnx, self.ctx.cache)
        else:
            onnx = export_onnx(module, [1, 28, 28], self.tmp / f"{name}.onnx")
        run_id = self.ctx.tracker.candidate_run(ing.parent_run_id, name, name, {})
        ref = self.ctx.store.put_file(onnx, suffix=".onnx")
        cand = CandidateResult(
            key=f"{name}-{ref.sha256[:12]}",
            job_key=ing.job_key,
            recipe=Recipe(name=name, steps=[PassStep(name="ort_dynamic_int8")]),
            recipe_key="r",
            status="ok",
            onnx=ref,
            run_id=run_id,
            seconds=0.0,
        )
        return gate(spec, ing, base, cand, self.ctx)


@pytest.fixture
def judge(ctx: StageContext, tiny_model: Path, animal_mnist: Path, tmp_path: Path) -> Judge:
    return Judge(ctx, tiny_model, animal_mnist, tmp_path)


LOOSE = {"mode": "absolute", "max_drop": 0.1, "method": "point"}


def test_agreement_guard_fails_a_candidate_that_keeps_accuracy_but_changes_its_answers(
    judge: Judge, tiny_model: Path
) -> None:
    noisy = _damaged(tiny_model, 0.03, seed=2)  # same accuracy, ~3% of the answers changed
    reported = judge(judge.spec(LOOSE), noisy, "reshuffled")
    assert reported.passed, reported.reason
    assert reported.drop is not None and abs(reported.drop) < 0.005
    assert reported.agreement is not None and reported.agreement < 0.98
    agreement = next(g for g in reported.guards if g.name == "agreement")
    assert agreement.limit is None and agreement.value == pytest.approx(reported.agreement)

    strict = judge(judge.spec({**LOOSE, "min_agreement": 0.99}), noisy, "reshuffled")
    assert not strict.passed
    assert "below the required 0.9900" in strict.reason

    same = judge(judge.spec({**LOOSE, "min_agreement": 0.99}), None, "same")
    assert same.passed and same.agreement == 1.0, same.reason


def test_robustness_guard_fails_a_candidate_that_only_breaks_on_noisy_inputs(
    judge: Judge, tiny_model: Path, animal_mnist: Path
) -> None:
    from squeezeflow.gate.perturb import perturb

    with np.load(animal_mnist / "test.npz") as z:
        clean = z["x"]
    noisy = perturb(clean[:300], "gaussian_noise", 0.1, seed=0)  # what the guard will score
    # A threshold above every clean held-out image: the brittle model is the baseline on clean data.
    threshold = float((_faint(clean).max() + _faint(noisy).min()) / 2)
    assert _faint(clean).max() < threshold < _faint(noisy).min()
    brittle = _NoiseBrittle(tiny_module(tiny_model), threshold).eval()
    rob = {"max_drop": 0.05, "samples": 300, "severity": 0.1}

    clean_only = judge(judge.spec(LOOSE), brittle, "brittle")
    assert clean_only.passed and clean_only.drop == pytest.approx(0.0, abs=1e-3), clean_only.reason
    assert not any(g.name.startswith("robustness") for g in clean_only.guards)

    guarded = judge(judge.spec({**LOOSE, "robustness": rob}), brittle, "brittle")
    assert not guarded.passed
    checks = {g.name: g for g in guarded.guards}
    assert set(checks) >= {"robustness:gaussian_noise", "robustness:blur", "robustness:brightness"}
    assert not checks["robustness:gaussian_noise"].passed
    assert checks["robustness:gaussian_noise"].value > 0.5
    assert "under gaussian_noise" in guarded.reason

    same = judge(judge.spec({**LOOSE, "robustness": rob}), None, "same")
    assert same.passed, same.reason
    assert all(g.passed and g.value == 0.0 for g in same.guards if g.name.startswith("robustness"))


def test_a_perturbation_that_does_not_fit_the_inputs_is_refused_at_ingest(judge: Judge) -> None:
    spec = judge.spec({**LOOSE, "robustness": {"perturbations": ["token_dropout"], "samples": 100}})
    with pytest.raises(SpecError, match="'token_dropout' needs integer token inputs"):
        ingest(spec, judge.ctx)


@pytest.mark.parametrize("metric", ["macro_f1", "top5_accuracy", "tests.user_metrics:balanced_accuracy"])
def test_gate_decides_on_the_configured_metric(judge: Judge, tiny_model: Path, metric: str) -> None:
    tol = {"mode": "absolute", "max_drop": 0.02, "method": "bootstrap", "bootstrap_samples": 300}
    spec = judge.spec(tol, metric=metric)
    same = judge(spec, None, "same")
    assert same.passed and same.metric_name == metric and same.drop == 0.0, same.reason

    broken = judge(spec, _damaged(tiny_model, 1.5, seed=2), "broken")
    assert not broken.passed
    assert broken.drop is not None and broken.drop > 0.02
    assert broken.drop_upper is not None and broken.drop_upper >= broken.drop
    assert metric in broken.reason


def test_a_metric_level_bootstrap_refuses_a_drop_it_cannot_bound(judge: Judge, tiny_model: Path) -> None:
    """With macro F1 the drop is bounded by resampling the metric itself: a small measured drop passes
    on the point estimate and is refused by the bootstrap when the bound exceeds the tolerance."""
    slightly = _damaged(tiny_model, 0.03, seed=3)  # macro F1 about 0.7 points lower
    point = judge(judge.spec({"max_drop": 0.03, "method": "point"}, metric="macro_f1"), slightly, "slight")
    assert point.drop is not None and 0.0 < point.drop < 0.03, point.reason
    assert point.passed
    boot = judge(
        judge.spec(
            {"max_drop": point.drop + 0.002, "method": "bootstrap", "bootstrap_samples": 400},
            metric="macro_f1",
        ),
        slightly,
        "slight",
    )
    assert not boot.passed
    assert boot.drop_upper is not None and boot.drop_upper > point.drop + 0.002
    assert boot.samples_needed is not None and boot.samples_needed > boot.n
