"""The Kubeflow pipelines run end to end with ``kfp.local`` (every component in a subprocess, as a pod
would run it) against real services on loopback: the model and data in S3, artifacts written to S3, runs
and the registry on a real MLflow tracking server. What runs is the checked-in compiled YAML."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest

from tests.reference import job_doc
from tests.servers import MlflowServer, S3Endpoint

kfp = pytest.importorskip("kfp")
from kfp import components as kfp_components  # noqa: E402
from kfp import local as kfp_local  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    # the local runner's notes: the image is not a python one, pod settings (CPU, names) do not apply
    pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:.*have no effect in the current local runner:UserWarning"),
]

REPO = Path(__file__).resolve().parents[2]
COMPRESS_YAML = REPO / "pipelines" / "compress.yaml"
RETRAIN_YAML = REPO / "pipelines" / "retrain_and_compress.yaml"


def upload_inputs(endpoint: S3Endpoint, bucket: str, model: Path, data: Path) -> tuple[str, str]:
    s3 = endpoint.client()
    for f in sorted(data.iterdir()):
        s3.upload_file(str(f), bucket, f"datasets/animal-mnist/{f.name}")
    s3.upload_file(str(model), bucket, f"models/{model.name}")
    return f"s3://{bucket}/models/{model.name}", f"s3://{bucket}/datasets/animal-mnist/"


@pytest.fixture
def kfp_env(
    one_s3_env: S3Endpoint,
    one_s3_bucket: str,
    mlflow_server: MlflowServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    """What the Kubernetes secret gives a pod, as the environment the local subprocesses inherit; the
    local runner; and its pipeline root."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.tracking_uri)
    monkeypatch.delenv("SQUEEZEFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SQUEEZEFLOW_ARTIFACTS", f"s3://{one_s3_bucket}/squeezeflow")
    monkeypatch.setenv("SQUEEZEFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SQUEEZEFLOW_WORKDIR", str(tmp_path / "work"))
    root = tmp_path / "kfp-root"
    kfp_local.init(runner=kfp_local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    yield root


def _task_dirs(root: Path, task: str) -> list[Path]:
    return sorted(p for p in root.glob(f"*/{task}") if p.is_dir())


def _output(task_dir: Path, name: str = "Output") -> Any:
    """A task's output parameter, from the executor output the local runner keeps."""
    return json.loads((task_dir / "executor_output.json").read_text())["parameterValues"][name]


def _handle(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    assert doc["format"] == "squeezeflow.kfp-handle/v1"
    return doc


@pytest.mark.timeout(600)
def test_compress_pipeline_promotes_through_kfp_local(
    kfp_env: Path,
    one_s3_env: S3Endpoint,
    one_s3_bucket: str,
    mlflow_server: MlflowServer,
    wide_model: Path,
    animal_mnist: Path,
) -> None:
    model_uri, data_uri = upload_inputs(one_s3_env, one_s3_bucket, wide_model, animal_mnist)
    name = f"kfp-{one_s3_env.name}-{one_s3_bucket[-8:]}"
    doc = job_doc(model_uri, data_uri, name=name)
    # The spec goes in as the UI would send it (JSON text), with one form field overridden.
    doc["registry"]["model_name"] = "overridden-below"
    pipeline = kfp_components.load_component_from_file(str(COMPRESS_YAML))
    run = pipeline(spec=json.dumps(doc), model_name=f"{name}-model")

    client = mlflow.MlflowClient(
        tracking_uri=mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri
    )
    mv = client.get_model_version_by_alias(f"{name}-model", "champion")
    assert mv.tags["squeezeflow.baseline_source"] == model_uri
    assert json.loads(mv.tags["squeezeflow.gate"])["passed"] is True
    bench = json.loads(mv.tags["squeezeflow.benchmark"])
    assert bench["p50_ms"] < bench["baseline_p50_ms"]
    sha = mv.tags["squeezeflow.candidate_sha256"]
    s3_keys = {
        o["Key"]
        for page in one_s3_env.client().get_paginator("list_objects_v2").paginate(Bucket=one_s3_bucket)
        for o in page.get("Contents", [])
    }
    assert f"squeezeflow/objects/{sha[:2]}/{sha}.onnx" in s3_keys

    # Both candidates went through the loop; the nested runs sit under one job run.
    exp = client.get_experiment_by_name(name)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert {"int8-dynamic", "int8-static-u8s8"} <= {r.info.run_name for r in runs}

    # The KFP outputs: the promoted model's handle names the registry version, the report is there,
    # and the Else branch did not run.
    (promote_dir,) = _task_dirs(kfp_env, "promote")
    assert not _task_dirs(kfp_env, "promote-2")
    handle = _handle(promote_dir / "promoted_model")
    assert handle["record"]["promoted"] is True
    assert handle["record"]["version"] == str(mv.version)
    assert "<" in (promote_dir / "report").read_text()
    # the confusion matrix of each candidate and the loop's per-candidate outputs
    gates = sorted(p for p in kfp_env.glob("*/for-loop-1-iteration-*/trial") if p.is_dir())
    assert len(gates) == 2
    assert name in (promote_dir / "report_markdown").read_text()
    result = json.loads(_output(promote_dir, "result"))
    assert result["promotion"]["version"] == str(mv.version)
    # the pipeline's own outputs name the promoted model
    assert run.outputs["promoted"] is True
    assert run.outputs["registered_model"] == f"{name}-model" and run.outputs["alias"] == "champion"
    assert run.outputs["version"] == str(mv.version)
    assert run.outputs["model_uri"] == f"models:/{name}-model/{mv.version}"
    (verdict_dir,) = _task_dirs(kfp_env, "gate-verdict")
    assert "passed the accuracy gate" in (verdict_dir / "summary").read_text()
    (ingest_dir,) = _task_dirs(kfp_env, "ingest")
    ingest_handle = _handle(ingest_dir / "dataset")
    assert ingest_handle["spec"]["registry"]["model_name"] == f"{name}-model"
    assert json.loads(_output(ingest_dir)) == ingest_handle["record"], "ingest outputs its record"


@pytest.mark.timeout(600)
def test_retrain_and_compress_retrains_then_reports_without_promoting(
    kfp_env: Path,
    one_s3_env: S3Endpoint,
    one_s3_bucket: str,
    mlflow_server: MlflowServer,
    tiny_model: Path,
    animal_mnist: Path,
) -> None:
    """The retrain step writes new weights to the store and the compression uses them. The run form sets
    max_drop 0, which no candidate can pass on a finite held-out split, so the pipeline's Else branch
    summarizes the job, writes the report and promotes nothing."""
    model_uri, data_uri = upload_inputs(one_s3_env, one_s3_bucket, tiny_model, animal_mnist)
    name = f"kfp-retrain-{one_s3_bucket[-8:]}"
    doc = job_doc(model_uri, data_uri, name=name)
    doc["search"]["recipes"] = doc["search"]["recipes"][1:]  # one recipe is enough here
    pipeline = kfp_components.load_component_from_file(str(RETRAIN_YAML))
    run = pipeline(
        spec=json.dumps(doc),
        train_entrypoint="squeezeflow.kfp.retrain:train_zoo_model",
        train_kwargs=json.dumps({"model": "tiny_cnn", "epochs": 1}),
        max_drop=0.0,
    )

    (retrain_dir,) = _task_dirs(kfp_env, "retrain")
    new_uri = _output(retrain_dir)
    assert new_uri.startswith(f"s3://{one_s3_bucket}/squeezeflow/objects/") and new_uri.endswith(".pt")
    (ingest_dir,) = _task_dirs(kfp_env, "ingest")
    ing = _handle(ingest_dir / "dataset")
    assert ing["spec"]["model"]["uri"] == new_uri
    assert ing["record"]["model_source"]["uri"] == new_uri

    assert not _task_dirs(kfp_env, "promote")
    (summary_dir,) = _task_dirs(kfp_env, "promote-2")
    result = json.loads(_output(summary_dir, "result"))
    assert result["promotion"]["promoted"] is False
    assert run.outputs["promoted"] is False and run.outputs["version"] == run.outputs["model_uri"] == ""
    assert run.outputs["registered_model"] == f"{name}-model"
    assert (summary_dir / "report_markdown").read_text().strip()
    client = mlflow.MlflowClient(
        tracking_uri=mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri
    )
    assert not client.search_model_versions(f"name = '{name}-model'")


@pytest.mark.timeout(300)
def test_the_run_form_alone_makes_a_job_without_a_spec(
    kfp_env: Path,
    one_s3_env: S3Endpoint,
    one_s3_bucket: str,
    tiny_model: Path,
    animal_mnist: Path,
) -> None:
    """The generic pipeline's ingest step, as its pod runs it, with the `spec` parameter empty: the run
    form's fields make the job, and the spec's defaults fill in the rest."""
    from squeezeflow.kfp import components as c

    model_uri, data_uri = upload_inputs(one_s3_env, one_s3_bucket, tiny_model, animal_mnist)
    task = c.ingest(
        spec="",
        job_name=f"form-only-{one_s3_bucket[-8:]}",
        model_uri=model_uri,
        model_format="state_dict",
        model_factory="squeezeflow.zoo.cnn:tiny_cnn",
        data_uri=data_uri,
        model_name="form-only-model",
        max_drop=0.02,
    )
    handle = _handle(Path(task.outputs["dataset"].path))
    assert handle["spec"]["model"]["uri"] == model_uri
    assert handle["spec"]["tolerance"]["max_drop"] == 0.02
    registry = handle["spec"]["registry"]
    assert (registry["model_name"], registry["alias"]) == ("form-only-model", "champion")
    record = json.loads(task.outputs["Output"])
    assert record == handle["record"] and record["stage"] == "ingest" and record["validation"]["success"]


@pytest.mark.timeout(600)
def test_huggingface_directory_job_on_raw_text_promotes_through_kfp_local(
    kfp_env: Path, one_s3_bucket: str, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    """A Hugging Face checkpoint folder and raw-text reviews on local disk, artifacts in S3: ingest's
    token ids travel through the store to every later component, and the promoted version answers raw
    text."""
    pytest.importorskip("transformers", reason="needs the hf extra: pip install -e '.[hf]'")
    from tests.huggingface_checkpoints import huggingface_job

    name = f"kfp-hf-{one_s3_bucket[-8:]}"
    pipeline = kfp_components.load_component_from_file(str(COMPRESS_YAML))
    run = pipeline(spec=json.dumps(huggingface_job(tmp_path, name)))

    (ingest_dir,) = _task_dirs(kfp_env, "ingest")
    tokenized = _handle(ingest_dir / "dataset")["record"]["dataset"]["tokenized"]
    assert tokenized["uri"].startswith(f"s3://{one_s3_bucket}/squeezeflow/datasets/")
    assert tokenized["max_length"] == 64
    assert run.outputs["promoted"] is True
    mlflow.set_tracking_uri(mlflow_server.tracking_uri)
    mlflow.set_registry_uri(mlflow_server.tracking_uri)  # an in-process job earlier may have set another
    answer = mlflow.pyfunc.load_model(run.outputs["model_uri"]).predict(["a dull, lifeless film"])
    assert answer["label"].iloc[0] in ("negative", "positive")
