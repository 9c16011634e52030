"""Fixtures of the reliability suite (see README.md here).

* `small_data` (from `tests.reference`): a clean 600/200/200 subset of Animal-MNIST.
* `world`: one real job on the session MLflow server, run once through the orchestrator task layer
  up to promotion: the wide CNN as ONNX (int8 makes it about 3x faster, so its candidates are eligible), its
  baseline measured on the target profile, and two eligible candidates built, gated and benchmarked.
  Promotion tests hand these records to `promote` in their own registered models.
* `one_at_a_time`: promotions decide without the settle time (for tests whose promotions never
  overlap).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from squeezeflow import tasks
from squeezeflow.results import (
    BaselineResult,
    BenchmarkResult,
    CandidateOutcome,
    IngestResult,
    Trial,
    dump_baseline_benchmarks,
)
from squeezeflow.spec.job import JobSpec
from squeezeflow.stages import Settings, StageContext
from tests.reference import job_doc, write_spec
from tests.servers import MlflowServer

# Measurement only has to tell int8 (about 3x faster) from fp32: few iterations.
FAST_DEVICE = {"name": "cpu-2t", "intra_op_threads": 2, "warmup": 5, "iterations": 50}
# Two eligible contenders with different recorded measurements (the same pass, calibrated differently).
CONTENDER_RECIPES = [
    {"name": "int8-cal128", "steps": [{"name": "ort_static_int8", "params": {"calibration_samples": 128}}]},
    {"name": "int8-cal64", "steps": [{"name": "ort_static_int8", "params": {"calibration_samples": 64}}]},
]


@pytest.fixture(scope="package")
def wide_onnx(wide_model: Path) -> Path:
    """The wide CNN exported to ONNX once (cached beside its weights): an ONNX baseline skips the
    PyTorch export in every job that uses it."""
    import torch

    from squeezeflow.models.sources import export_onnx
    from squeezeflow.zoo.cnn import wide_resnet

    out = wide_model.with_suffix(".onnx")
    if not out.exists() or out.stat().st_mtime < wide_model.stat().st_mtime:
        model = wide_resnet()
        model.load_state_dict(torch.load(wide_model, map_location="cpu", weights_only=True))
        tmp = export_onnx(model.eval(), [1, 28, 28], out.with_name(f".{out.name}.{os.getpid()}.part"))
        os.replace(tmp, out)
    return out


def onnx_job_doc(model: Path, data: Path, name: str) -> dict[str, Any]:
    """A fast job on an ONNX baseline: lenient tolerance for the small held-out split, few iterations."""
    doc = job_doc(model, data, name=name)
    doc["model"] = {"format": "onnx", "uri": str(model)}
    doc["tolerance"] = {"mode": "absolute", "max_drop": 0.05, "bootstrap_samples": 500}
    doc["devices"] = [FAST_DEVICE]
    doc["search"] = {"recipes": CONTENDER_RECIPES, "max_trials": 2, "seed": 0}
    return doc


@dataclass
class World:
    """A job's records up to promotion, and how to open its stores."""

    doc: dict[str, Any]
    spec_path: Path
    settings: Settings
    ingest: dict[str, Any]
    baseline: dict[str, Any]
    baseline_benchmarks: dict[str, Any]
    outcomes: list[dict[str, Any]]
    dir: Path

    def spec(self, model_name: str, **overrides: Any) -> JobSpec:
        """This job's spec promoting to ``model_name`` (each test uses its own registered model)."""
        doc = {**self.doc, "registry": {"model_name": model_name, "alias": "champion"}, **overrides}
        return tasks.resolve_job(doc)

    def context(self) -> StageContext:
        return StageContext.open(self.settings, self.doc["name"])

    @property
    def target(self) -> BenchmarkResult:
        return BenchmarkResult.model_validate(self.baseline_benchmarks[self.doc["devices"][0]["name"]])

    def records(self) -> tuple[IngestResult, BaselineResult, BenchmarkResult, list[CandidateOutcome]]:
        return (
            IngestResult.model_validate(self.ingest),
            BaselineResult.model_validate(self.baseline),
            self.target,
            [CandidateOutcome.model_validate(o) for o in self.outcomes],
        )

    def another_job(self, ctx: StageContext, tag: str) -> IngestResult:
        """This job's ingest record as another job would have it (own job key, own MLflow parent run):
        what promotion sees of a second job that built the same candidates."""
        ing = IngestResult.model_validate(self.ingest)
        job_key = f"{ing.job_key}-{tag}"
        parent = ctx.tracker.job_run(job_key, run_name=f"{self.doc['name']}-{tag}", tags={})
        return ing.model_copy(update={"job_key": job_key, "parent_run_id": parent})

    def write(self, name: str, doc: Any) -> Path:
        path = self.dir / name
        path.write_text(json.dumps(doc))
        return path


@pytest.fixture(scope="package")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    mlflow_server: MlflowServer,
    wide_onnx: Path,
    small_data: Path,
) -> World:
    root = tmp_path_factory.mktemp("reliability-world")
    doc = onnx_job_doc(wide_onnx, small_data, name=f"reliability-{uuid.uuid4().hex[:8]}")
    settings = Settings(
        artifacts=str(root / "artifacts"), tracking_uri=mlflow_server.tracking_uri, workdir=root / "work"
    )
    spec = tasks.resolve_job(doc)
    ing = tasks.ingest_task(spec, settings)
    base = tasks.baseline_task(spec, settings, ing)
    benches = tasks.baseline_benchmark_task(spec, settings, ing, base)
    assert isinstance(benches, dict)
    outcomes = []
    for recipe in tasks.plan_task(spec, settings, ing, 0):
        gated = tasks.gate_task(
            spec, settings, ing, base, tasks.optimize_task(spec, settings, ing, base, recipe)
        )
        assert isinstance(gated, Trial)
        done = tasks.benchmark_task(spec, settings, ing, base, gated)
        assert isinstance(done, CandidateOutcome)
        outcomes.append(done.model_dump(mode="json"))
    w = World(
        doc,
        write_spec(root / "job.yaml", doc),
        settings,
        ing.model_dump(mode="json"),
        base.model_dump(mode="json"),
        dump_baseline_benchmarks(benches),
        outcomes,
        root,
    )
    _check_eligible(w)
    return w


def _check_eligible(w: World) -> None:
    from squeezeflow.stages.promote import eligibility

    ing, base, target, outs = w.records()
    for o in outs:
        ok, why = eligibility(o, base, target, ing)
        assert ok, f"the world's candidate {o.candidate.label} is not eligible: {why}"


@pytest.fixture
def one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """No settle time before a promotion decides: for tests whose promotions never overlap."""
    monkeypatch.setenv("SQUEEZEFLOW_PROMOTION_SETTLE_S", "0")


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float, every_s: float = 0.05) -> Any:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)
