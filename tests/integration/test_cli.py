"""The ``squeezeflow`` command itself: infrastructure failures map to exit 3, the per-stage commands
chain through JSON files the way an orchestrator runs them, and the inspection commands work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from squeezeflow.passes import describe_passes
from squeezeflow.results import (
    BaselineResult,
    BenchmarkResult,
    CandidateOutcome,
    CandidateResult,
    GateResult,
    IngestResult,
    PromotionResult,
)
from squeezeflow.spec.job import JobSpec
from tests.reference import job_doc, write_spec
from tests.servers import free_port

pytestmark = pytest.mark.integration

SQUEEZEFLOW = str(Path(sys.executable).with_name("squeezeflow"))


def squeezeflow(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SQUEEZEFLOW, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_dead_mlflow_server_is_an_infrastructure_failure_exit_3(
    tmp_path: Path, tiny_model: Path, animal_mnist: Path
) -> None:
    spec = write_spec(tmp_path / "job.yaml", job_doc(tiny_model, animal_mnist, name="dead-mlflow"))
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    proc = squeezeflow(
        "run",
        spec,
        "--no-progress",
        "--artifacts",
        tmp_path / "artifacts",
        "--tracking-uri",
        uri,
        "--workdir",
        tmp_path / "work",
        env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"},
        timeout=180,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert f"error (InfrastructureError): MLflow at {uri} is unreachable" in one_line(proc.stderr)
    assert elapsed < 90, f"took {elapsed:.0f}s to give up on a dead server"


def test_dead_s3_endpoint_is_an_infrastructure_failure_exit_3(tmp_path: Path, tiny_model: Path) -> None:
    spec = write_spec(tmp_path / "job.yaml", job_doc(tiny_model, "s3://bucket/x", name="dead-s3"))
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": "dummy",
            "AWS_SECRET_ACCESS_KEY": "dummy",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
            "SQUEEZEFLOW_S3_MAX_ATTEMPTS": "2",
        }
    )
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            SQUEEZEFLOW,
            "run",
            str(spec),
            "--no-progress",
            "--artifacts",
            str(tmp_path / "artifacts"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--workdir",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    err = one_line(proc.stderr)
    assert "error (InfrastructureError): S3 download of s3://bucket/x/dataset.json failed" in err, err
    assert endpoint in err, err
    assert elapsed < 90, f"took {elapsed:.0f}s to give up on a dead endpoint"
    assert (
        MlflowClient(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            registry_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        ).search_registered_models()
        == []
    )


def test_stage_commands_chain_like_an_orchestrator(
    tmp_path: Path, tiny_model: Path, animal_mnist: Path
) -> None:
    spec = write_spec(tmp_path / "job.yaml", job_doc(tiny_model, animal_mnist, name="staged-tiny"))
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [
        "--spec",
        spec,
        "--artifacts",
        tmp_path / "artifacts",
        "--tracking-uri",
        tracking,
        "--workdir",
        tmp_path / "work",
    ]
    files = tmp_path / "results"

    def stage(name: str, out: str, *args: str | Path, expect: int = 0) -> Path:
        path = files / out
        proc = squeezeflow("stage", name, *common, "--out", path, *args)
        assert proc.returncode == expect, f"stage {name}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
        assert path.is_file(), f"stage {name} wrote no {out}"
        return path

    ingest = stage("ingest", "ingest.json")
    ing = IngestResult.model_validate_json(ingest.read_text())
    assert ing.validation.success and ing.dataset.num_classes == 10

    baseline = stage("baseline", "baseline.json", "--ingest", ingest)
    base = BaselineResult.model_validate_json(baseline.read_text())
    assert base.parent_run_id == ing.parent_run_id and base.metric > 0.5

    planned = json.loads(stage("plan", "plan.json", "--ingest", ingest).read_text())
    assert [r["name"] for r in planned] == ["int8-static-u8s8", "int8-dynamic"]
    trial = stage("optimize", "trial.json", "--ingest", ingest, "--baseline", baseline, "--recipe-index", "1")
    cand = CandidateResult.model_validate(json.loads(trial.read_text())["candidate"])
    assert cand.status == "ok", cand.error
    # dynamic int8 turns the tiny CNN's convolutions into ConvInteger: several times slower on a CPU,
    # a margin no load on the machine can close: the gate stage measures it first and skips it
    assert cand.recipe.steps[0].name == "ort_dynamic_int8" and cand.onnx is not None

    gated = stage("gate", "gated.json", "--ingest", ingest, "--baseline", baseline, "--trial", trial)
    doc = json.loads(gated.read_text())
    verdict = GateResult.model_validate(doc["gate"])
    assert verdict.candidate_key == cand.key and verdict.candidate_sha256 == cand.onnx.sha256
    assert not verdict.passed and verdict.reason.startswith("not evaluated: slower than the baseline")

    base_benches = {
        name: BenchmarkResult.model_validate(b)
        for name, b in json.loads(
            stage("benchmark", "bench-baseline.json", "--ingest", ingest, "--baseline", baseline).read_text()
        ).items()
    }
    assert list(base_benches) == ["cpu-2t"] and base_benches["cpu-2t"].model_sha256 == base.onnx.sha256
    done = stage("benchmark", "outcome.json", "--ingest", ingest, "--baseline", baseline, "--trial", gated)
    outcome = CandidateOutcome.model_validate_json(done.read_text())
    # the measurement that decided the skip is kept, and no more device time is spent on it
    assert [b.model_sha256 for b in outcome.benchmarks] == [cand.onnx.sha256]

    result_file = stage(
        "promote",
        "result.json",
        "--ingest",
        ingest,
        "--baseline",
        baseline,
        "--baseline-benchmark",
        files / "bench-baseline.json",
        expect=1,
    )
    result = json.loads(result_file.read_text())
    promotion = PromotionResult.model_validate(result["promotion"])
    assert not promotion.promoted and promotion.version is None
    # promotion read every trial the search recorded: the one built here
    assert [r["label"] for r in result["candidates"]] == ["int8-dynamic"]
    assert [r["gate"] for r in result["candidates"]] == ["not evaluated: slower"]
    assert "slower than the baseline" in promotion.reason, promotion.reason
    assert MlflowClient(tracking_uri=tracking, registry_uri=tracking).search_registered_models() == []


def test_passes_command_lists_registered_passes() -> None:
    proc = squeezeflow("passes")
    assert proc.returncode == 0, proc.stderr
    registered = [p["name"] for p in describe_passes()]
    assert {"ort_static_int8", "ort_dynamic_int8"} <= set(registered)
    for name in registered:
        assert name in proc.stdout, proc.stdout
    # and what the search varies, declared by each pass
    for searched in ("prune_ratio", "importance", "distill", "quantize", "lowrank_ratio"):
        assert f"{searched}:" in proc.stdout, proc.stdout


def test_a_spec_naming_missing_local_inputs_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    doc = {
        "name": "missing",
        "model": {"format": "state_dict", "uri": "model.pt", "factory": "squeezeflow.zoo.cnn:tiny_cnn"},
        "data": {"uri": "data"},
        "registry": {"model_name": "missing-model"},
    }
    spec = write_spec(tmp_path / "job.yaml", doc)
    proc = squeezeflow("spec", "validate", spec)
    assert proc.returncode == 2
    assert "model.uri" in proc.stderr and "data.uri" in proc.stderr and "does not exist" in proc.stderr
    assert squeezeflow("spec", "validate", "--no-check-paths", spec).returncode == 0

    work = tmp_path / "work"
    proc = squeezeflow(
        "run",
        spec,
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--artifacts",
        str(tmp_path / "artifacts"),
        "--workdir",
        str(work),
    )
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "artifacts").exists()
    assert not work.exists()


def test_spec_validate_prints_defaults(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "job.yaml",
        {
            "name": "minimal",
            "model": {"format": "state_dict", "uri": "model.pt", "factory": "squeezeflow.zoo.cnn:tiny_cnn"},
            "data": {"uri": "data"},
            "registry": {"model_name": "minimal-model"},
        },
    )
    (tmp_path / "model.pt").write_bytes(b"")
    (tmp_path / "data").mkdir()
    proc = squeezeflow("spec", "validate", spec)
    assert proc.returncode == 0, proc.stderr
    assert f"{spec}: valid (job minimal" in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["apiVersion"] == "squeezeflow/v1"
    # relative paths resolve against the spec file's directory
    assert doc["model"]["uri"] == str((tmp_path / "model.pt").resolve())
    assert doc["data"] == {"uri": str((tmp_path / "data").resolve()), "format": "npz"}
    assert doc["model"]["factory_kwargs"] == {}
    assert doc["task"] == {"kind": "classification", "metric": "top1_accuracy"}
    assert doc["tolerance"] == {
        "mode": "absolute",
        "max_drop": 0.01,
        "method": "bootstrap",
        "confidence": 0.95,
        "bootstrap_samples": 2000,
        "max_class_recall_drop": None,
        "min_agreement": None,
        "robustness": None,
        "min_device_agreement": 0.99,
    }
    assert doc["devices"] == [
        {
            "profile": None,
            "name": "local-cpu",
            "runtime": "onnxruntime",
            "execution_provider": "CPUExecutionProvider",
            "intra_op_threads": 2,
            "inter_op_threads": 1,
            "batch_size": 1,
            "extra_batch_sizes": [],
            "input_shape": None,
            "channel_multiple": 8,
            "warmup": 20,
            "iterations": 300,
            "budgets": {"max_p95_ms": None, "max_size_mb": None, "max_peak_memory_mb": None},
            "remote": False,
            "remote_timeout_s": 3600.0,
            "evaluate_on_device": False,
        }
    ]
    assert doc["target_device"] is None and doc["objective"] == "latency"
    search = doc["search"]
    assert (search["recipes"], search["max_trials"], search["max_seconds"], search["seed"]) == (
        None,
        8,
        1800.0,
        0,
    )
    assert search["space"]["prune_ratio"] == [0.3, 0.9] and search["patience"] == 4
    assert doc["registry"] == {
        "model_name": "minimal-model",
        "alias": "champion",
        "description": None,
        "history_limit": 20,
    }
    # what it prints is itself a valid, complete spec
    assert JobSpec.model_validate(doc).name == "minimal"
