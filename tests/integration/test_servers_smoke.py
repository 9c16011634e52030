"""The loopback services behind the integration tests really work (see `tests/conftest.py`)."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import mlflow
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from tests.servers import MlflowServer, S3Endpoint, http_status

pytestmark = pytest.mark.integration


def test_s3_put_get_through_environment(s3_bucket: str, s3_env: S3Endpoint) -> None:
    # A plain client with no endpoint argument: the environment set by `s3_env` routes it.
    client = boto3.client("s3")
    assert client.meta.endpoint_url == s3_env.endpoint_url
    assert getattr(client.meta.config, "request_checksum_calculation", None) == "when_required"

    body = b"squeezeflow \x00\xff payload"
    client.put_object(Bucket=s3_bucket, Key="smoke/object.bin", Body=body)
    assert client.get_object(Bucket=s3_bucket, Key="smoke/object.bin")["Body"].read() == body
    listed = client.list_objects_v2(Bucket=s3_bucket, Prefix="smoke/")
    assert [item["Key"] for item in listed.get("Contents", [])] == ["smoke/object.bin"]


def test_s3_multipart_upload(s3_bucket: str, s3_env: S3Endpoint, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(uuid.uuid4().bytes * (6 * 1024 * 1024 // 16 + 1))  # just over one 5 MiB part
    client = s3_env.client()
    config = TransferConfig(multipart_threshold=5 * 1024 * 1024)
    client.upload_file(str(source), s3_bucket, "big.bin", Config=config)
    target = tmp_path / "back.bin"
    client.download_file(s3_bucket, "big.bin", str(target))
    assert target.read_bytes() == source.read_bytes()


def test_one_letter_bucket_name_is_refused(s3_env: S3Endpoint) -> None:
    if s3_env.is_moto:
        pytest.skip("moto accepts names real S3 refuses (e.g. 'a'); only the external endpoint can tell")
    client = s3_env.client()
    with pytest.raises(ClientError) as excinfo:
        client.create_bucket(Bucket="a")
    assert excinfo.value.response["Error"]["Code"] == "InvalidBucketName"


def test_mlflow_experiment_and_run_round_trip(mlflow_server: MlflowServer) -> None:
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.tracking_uri)
    experiment_id = client.create_experiment(f"smoke-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id, tags={"purpose": "smoke"})
    client.log_param(run.info.run_id, "alpha", "0.5")
    client.log_metric(run.info.run_id, "accuracy", 0.93)
    client.log_text(run.info.run_id, "hello artifacts", "notes/hello.txt")
    client.set_terminated(run.info.run_id)

    again = client.get_run(run.info.run_id)
    assert again.info.experiment_id == experiment_id
    assert again.info.status == "FINISHED"
    assert again.data.params == {"alpha": "0.5"}
    assert again.data.metrics == {"accuracy": 0.93}
    assert again.data.tags["purpose"] == "smoke"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "notes")] == ["notes/hello.txt"]
    assert mlflow_server.artifacts_dir.is_dir()


def test_mlflow_server_restarts_on_same_port_and_store(mlflow_server: MlflowServer) -> None:
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.tracking_uri)
    name = f"restart-{uuid.uuid4().hex[:8]}"
    experiment_id = client.create_experiment(name)
    port = mlflow_server.port

    with mlflow_server.down():
        assert not mlflow_server.is_running
        assert http_status(f"{mlflow_server.tracking_uri}/health") is None

    assert mlflow_server.is_running
    assert mlflow_server.port == port
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    assert experiment.experiment_id == experiment_id
