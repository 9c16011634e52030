"""The whole job on the embedded defaults (local artifact directory, local SQLite MLflow store),
on real Animal-MNIST data and real trained models."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from squeezeflow.results import JobResult
from squeezeflow.runner import run_job
from squeezeflow.runtime import predict_logits
from squeezeflow.spec.load import parse_spec
from squeezeflow.stages import Settings
from tests.reference import job_doc, library_noise, write_spec

pytestmark = pytest.mark.integration

SQUEEZEFLOW = str(Path(sys.executable).with_name("squeezeflow"))


def settings_for(tmp: Path) -> Settings:
    return Settings(
        artifacts=str(tmp / "artifacts"), tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", workdir=tmp / "work"
    )


@pytest.fixture(scope="module")
def promoted_job(
    tmp_path_factory: pytest.TempPathFactory, wide_model: Path, animal_mnist: Path
) -> tuple[JobResult, Settings]:
    tmp = tmp_path_factory.mktemp("embedded")
    spec = parse_spec(job_doc(wide_model, animal_mnist, name="embedded-small"))
    settings = settings_for(tmp)
    return run_job(spec, settings, progress=False), settings


def test_job_promotes_a_faster_smaller_candidate_within_tolerance(
    promoted_job: tuple[JobResult, Settings],
) -> None:
    result, _ = promoted_job
    p = result.promotion
    assert p.promoted, p.reason
    row = next(r for r in result.candidates if r.candidate_key == p.candidate_key)
    assert row.gate == "pass" and row.delta is not None and row.delta >= -0.01
    assert row.p50_ms is not None and row.p50_ms < result.baseline_p50_ms
    assert row.size_bytes is not None and row.size_bytes < result.baseline_size_bytes


def test_every_candidate_is_a_nested_run_and_a_logged_model(promoted_job: tuple[JobResult, Settings]) -> None:
    result, settings = promoted_job
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    runs = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    assert len(runs) == len(result.candidates) == 2
    mlflow.set_tracking_uri(settings.tracking_uri)
    models = mlflow.search_logged_models(
        experiment_ids=[result.experiment_id],
        filter_string="tags.`squeezeflow.kind` = 'candidate'",
        order_by=[{"field_name": "metrics.top1_accuracy", "ascending": False}],
        output_format="list",
    )
    assert {m.model_id for m in models} == {r.model_id for r in result.candidates}
    # Every candidate the gate judged carries its accuracy; one measured too slow to ever be promoted
    # was not sent to the gate, and its run says so.
    judged = {r.model_id for r in result.candidates if r.metric is not None}
    assert judged and result.promotion.promoted
    assert all(any(x.key == "top1_accuracy" for x in m.metrics) for m in models if m.model_id in judged)
    for row in result.candidates:
        if row.metric is None:
            assert (
                "not evaluated: slower than the baseline"
                in client.get_run(row.run_id).data.tags["gate.skipped"]
            )


def test_registered_version_carries_lineage_and_the_alias(promoted_job: tuple[JobResult, Settings]) -> None:
    result, settings = promoted_job
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    p = result.promotion
    mv = client.get_model_version_by_alias(p.model_name, p.alias)
    assert str(mv.version) == p.version
    for tag in (
        "squeezeflow.baseline_sha256",
        "squeezeflow.dataset_sha256",
        "squeezeflow.recipe",
        "squeezeflow.gate",
        "squeezeflow.benchmark",
        "squeezeflow.candidate_sha256",
    ):
        assert mv.tags.get(tag), tag
    gate = json.loads(mv.tags["squeezeflow.gate"])
    assert gate["passed"] is True and gate["drop"] <= gate["allowed_drop"]


def test_registered_model_loads_with_pyfunc_and_predicts_like_the_benchmarked_artifact(
    promoted_job: tuple[JobResult, Settings], animal_mnist: Path
) -> None:
    result, settings = promoted_job
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    p = result.promotion
    loaded = mlflow.pyfunc.load_model(f"models:/{p.model_name}@{p.alias}")
    x = np.load(animal_mnist / "test.npz")["x"][:64]
    served = loaded.predict(x)["logits"]
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    sha = client.get_model_version_by_alias(p.model_name, p.alias).tags["squeezeflow.candidate_sha256"]
    artifact = Path(settings.artifacts) / "objects" / sha[:2] / f"{sha}.onnx"
    np.testing.assert_allclose(served, predict_logits(artifact, x), rtol=1e-5, atol=1e-5)
    # the promoted file is, byte for byte, the candidate the gate and the benchmark read
    promoted = mlflow.artifacts.download_artifacts(f"models:/{p.model_name}@{p.alias}/model.onnx")
    assert hashlib.sha256(Path(promoted).read_bytes()).hexdigest() == sha
    names = json.loads((animal_mnist / "dataset.json").read_text())["class_names"]
    assert list(loaded.predict(x[:4])["label"]) == [names[i] for i in served[:4].argmax(axis=1)]


def test_the_printed_load_hint_works_as_printed_from_another_directory(
    promoted_job: tuple[JobResult, Settings], tmp_path: Path
) -> None:
    import io

    from rich.console import Console

    from squeezeflow.report import print_summary

    result, _ = promoted_job
    out = io.StringIO()
    print_summary(result, Console(file=out, width=120))
    (hint,) = [
        line.split("load it with: ", 1)[1] for line in out.getvalue().splitlines() if "load it with: " in line
    ]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(["bash", "-c", hint], cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Tensor('float32'" in proc.stdout, proc.stdout
    assert list(elsewhere.iterdir()) == [], "loading the model left files in the current directory"


def test_rerun_creates_no_duplicate_runs_candidates_or_versions(
    promoted_job: tuple[JobResult, Settings], wide_model: Path, animal_mnist: Path
) -> None:
    first, settings = promoted_job
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    runs_before = len(client.search_runs([first.experiment_id]))
    again = run_job(
        parse_spec(job_doc(wide_model, animal_mnist, name="embedded-small")), settings, progress=False
    )
    assert again.job_key == first.job_key
    assert again.promotion.version == first.promotion.version
    assert len(client.search_runs([first.experiment_id])) == runs_before
    assert len(client.search_model_versions(f"name = '{first.promotion.model_name}'")) == 1


@pytest.mark.parametrize("skip_slower_than", [1.5, None])
def test_candidate_slower_than_the_baseline_is_never_promoted(
    tmp_path: Path, tiny_model: Path, animal_mnist: Path, skip_slower_than: float | None
) -> None:
    # Dynamic int8 turns the tiny CNN's convolutions into ConvInteger: smaller, passes the gate, and
    # several times slower on a CPU (a margin no load on the machine can close).
    doc = job_doc(tiny_model, animal_mnist, name="tiny")
    doc["search"]["recipes"] = [r for r in doc["search"]["recipes"] if r["name"] == "int8-dynamic"]
    doc["search"]["skip_slower_than"] = skip_slower_than
    spec = write_spec(tmp_path / "job.yaml", doc)
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [
            SQUEEZEFLOW,
            "run",
            str(spec),  # progress bars on by default: output to a pipe draws none
            "--result",
            str(out),
            "--artifacts",
            str(tmp_path / "a"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'm.db'}",
            "--workdir",
            str(tmp_path / "w"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        # rich would take these for a terminal and draw the bars
        env={
            k: v
            for k, v in os.environ.items()
            if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
        },
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    result = JobResult.model_validate_json(out.read_text())
    assert not result.promotion.promoted and result.promotion.version is None
    (row,) = result.candidates
    assert row.p50_ms is not None and row.p50_ms > 0 and "slower than the baseline" in row.note
    if skip_slower_than is None:  # judged by the gate, then refused by promotion
        assert row.gate == "pass" and row.metric is not None
    else:
        # Measured first and found slower, it is not sent to the gate: its held-out evaluation would be
        # time spent on a candidate that can never be promoted. The row keeps its measurement and says why.
        assert row.gate == "not evaluated: slower" and row.metric is None
        assert "not evaluated: slower than the baseline" in row.note
    assert "Nothing promoted" in proc.stdout
    # a newcomer's first run reads as the job's own output: no library chatter, no dumped progress bars
    output = proc.stdout + proc.stderr
    assert library_noise(output) == [], output
    assert not re.search(r"\d+/\d+ \d+:\d\d:\d\d", output), output
    db = f"sqlite:///{tmp_path / 'm.db'}"
    assert mlflow.MlflowClient(tracking_uri=db, registry_uri=db).search_registered_models() == []


def test_embedded_store_keeps_mlflow_artifacts_beside_its_database(
    promoted_job: tuple[JobResult, Settings],
) -> None:
    """MLflow's default artifact root for a SQLite store is ./mlruns in the current directory; the
    embedded default must not scatter model files into whatever directory the user ran it from."""
    result, settings = promoted_job
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    source = client.get_model_version_by_alias(result.promotion.model_name, "champion").source
    db_dir = Path(settings.tracking_uri.removeprefix("sqlite:///")).parent
    assert str(db_dir / "mlartifacts") in source, source
