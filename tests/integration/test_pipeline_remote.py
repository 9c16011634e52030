"""The job against real services on loopback: dataset and model read from S3, artifacts written to
S3, runs and the registry on a real MLflow tracking server (over HTTP)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from squeezeflow.results import JobResult
from squeezeflow.runner import run_job
from squeezeflow.runtime import predict_logits
from squeezeflow.spec.load import parse_spec
from squeezeflow.stages import Settings
from tests.reference import job_doc
from tests.servers import MlflowServer, S3Endpoint

pytestmark = pytest.mark.integration


def upload_inputs(endpoint: S3Endpoint, bucket: str, model: Path, data: Path) -> tuple[str, str]:
    s3 = endpoint.client()
    for f in sorted(data.iterdir()):
        s3.upload_file(str(f), bucket, f"datasets/animal-mnist/{f.name}")
    s3.upload_file(str(model), bucket, f"models/{model.name}")
    return f"s3://{bucket}/models/{model.name}", f"s3://{bucket}/datasets/animal-mnist/"


def test_job_reads_from_s3_writes_to_s3_and_promotes_in_the_mlflow_server(
    s3_env: S3Endpoint,
    s3_bucket: str,
    mlflow_server: MlflowServer,
    wide_model: Path,
    animal_mnist: Path,
    tmp_path: Path,
) -> None:
    model_uri, data_uri = upload_inputs(s3_env, s3_bucket, wide_model, animal_mnist)
    name = f"remote-{s3_env.name}-{s3_bucket[-8:]}"
    spec = parse_spec(job_doc(model_uri, data_uri, name=name))
    # Credentials in the tracking URI (as in a database URI) never reach the result or the report.
    with_password = mlflow_server.tracking_uri.replace("://", "://squeeze:uri-pw-7f3a@", 1)
    settings = Settings(
        artifacts=f"s3://{s3_bucket}/squeezeflow",
        tracking_uri=with_password,
        workdir=tmp_path / "w",
    )
    result = run_job(spec, settings, progress=False)
    assert "uri-pw-7f3a" not in result.model_dump_json()
    assert result.report_html is not None
    report = (
        s3_env.client()
        .get_object(Bucket=s3_bucket, Key=result.report_html.removeprefix(f"s3://{s3_bucket}/"))["Body"]
        .read()
    )
    assert b"uri-pw-7f3a" not in report and b"squeeze:***@" in report

    # candidates: one nested run each, under the job's run, on the server
    client = mlflow.MlflowClient(
        tracking_uri=mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri
    )
    nested = client.search_runs(
        [result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'"
    )
    assert sorted(r.info.run_name for r in nested) == ["int8-dynamic", "int8-static-u8s8"]
    assert all(r.data.tags.get("squeezeflow.gate") in ("passed", "failed") for r in nested)

    # the registered version, its lineage tags and the alias
    p = result.promotion
    assert p.promoted, p.reason
    mv = client.get_model_version_by_alias(p.model_name, "champion")
    assert str(mv.version) == p.version
    assert mv.tags["squeezeflow.baseline_source"] == model_uri
    assert json.loads(mv.tags["squeezeflow.gate"])["passed"] is True
    assert json.loads(mv.tags["squeezeflow.benchmark"])["p50_ms"] < result.baseline_p50_ms

    # the bytes live in the bucket, content-addressed, with the stage records beside them
    keys = [
        o["Key"]
        for page in s3_env.client().get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
        for o in page.get("Contents", [])
    ]
    sha = mv.tags["squeezeflow.candidate_sha256"]
    assert f"squeezeflow/objects/{sha[:2]}/{sha}.onnx" in keys
    for stage in ("ingest", "baseline", "optimize", "gate", "benchmark", "promote"):
        assert any(k.startswith(f"squeezeflow/records/{stage}/") for k in keys), stage

    # a downstream user gets the benchmarked artifact's predictions from the registry
    local = tmp_path / "candidate.onnx"
    s3_env.client().download_file(s3_bucket, f"squeezeflow/objects/{sha[:2]}/{sha}.onnx", str(local))
    mlflow.set_tracking_uri(mlflow_server.tracking_uri)
    mlflow.set_registry_uri(mlflow_server.tracking_uri)
    x = np.load(animal_mnist / "test.npz")["x"][:32]
    served = mlflow.pyfunc.load_model(f"models:/{p.model_name}@champion").predict(x)["logits"]
    np.testing.assert_allclose(served, predict_logits(local, x), rtol=1e-5, atol=1e-5)

    # a retry of the whole job (as an orchestrator would) duplicates nothing
    runs_before = len(client.search_runs([result.experiment_id]))
    again: JobResult = run_job(spec, settings, progress=False)
    assert again.promotion.version == p.version
    assert len(client.search_runs([result.experiment_id])) == runs_before
    assert len(client.search_model_versions(f"name = '{p.model_name}'")) == 1


def test_artifact_status_tags_only_move_up_so_a_promoted_model_never_expires(
    s3_env: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    from squeezeflow.store.artifacts import STATUS_TAG, open_store

    store = open_store(f"s3://{s3_bucket}/squeezeflow")
    f = tmp_path / "m.onnx"
    f.write_bytes(b"candidate bytes shared by two candidates")
    ref = store.put_file(f, suffix=".onnx")

    def status() -> str:
        key = f"squeezeflow/{store.key_of(ref.uri)}"
        tags = s3_env.client().get_object_tagging(Bucket=s3_bucket, Key=key)["TagSet"]
        return {t["Key"]: t["Value"] for t in tags}[STATUS_TAG]

    store.mark(ref, "failed")
    assert status() == "failed"
    store.mark(ref, "promoted")
    assert status() == "promoted"
    store.mark(ref, "failed")  # the same bytes failing another job's gate later
    assert status() == "promoted"
