"""The MLflow server going down in the middle of a job, the job run again once it is back, and the
credentials the job ran with.

One scenario, run once for the module: `squeezeflow run` (a real CLI process) on the wide CNN with its
model, data and artifacts in S3 (moto, with credentials of our own) and its runs on the session MLflow
server, with MLflow basic-auth credentials in its environment. When the job starts promoting (its
model version appears in the registry), the test kills the MLflow server (its whole process group, as
a crash would), waits for the job to give up, starts the server again and runs the same job again.
(A worker killed in the middle of a candidate is `test_worker_kill.py`.)

What the tests prove:

* the job gives up after bounded retries with backoff, within a bounded time, exit code 3 and a
  message that says MLflow is unreachable and where;
* the rerun continues from the recorded results: the same parent run, the same candidate runs, one
  LoggedModel per candidate run (and one for the baseline), and the model version registered before
  the outage is the one promoted (no second version);
* no credential (the AWS key id and secret, the MLflow password) appears in the job's stdout or
  stderr (verbose), its result JSON, any MLflow run's params or tags, any LoggedModel's params or
  tags, the registered model's and its versions' tags and descriptions, MLflow's stored artifacts,
  or any object the job wrote to the bucket (stage records, the HTML and Markdown report).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import string
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus

from tests.reference import write_spec
from tests.reliability.conftest import onnx_job_doc, wait_for
from tests.servers import MlflowServer, MotoServer, S3Endpoint, create_bucket

pytestmark = pytest.mark.integration

SQUEEZEFLOW = str(Path(sys.executable).with_name("squeezeflow"))
GIVE_UP_WITHIN_S = 90  # from the server's death to exit 3


def _secret(prefix: str, n: int) -> str:
    return prefix + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


@dataclass
class Scenario:
    name: str
    model_name: str
    bucket: str
    endpoint: S3Endpoint
    credentials: dict[str, str]
    first: subprocess.CompletedProcess[str]
    gave_up_after_s: float
    runs_before_outage: list[str]
    versions_before_outage: list[str]
    second: subprocess.CompletedProcess[str]
    result: dict[str, Any]
    mlflow: MlflowServer

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.mlflow.tracking_uri, registry_uri=self.mlflow.tracking_uri)

    def experiment_id(self) -> str:
        exp = self.client().get_experiment_by_name(self.name)
        assert exp is not None
        return str(exp.experiment_id)


def _kill_group(server: MlflowServer) -> None:
    """A crash, not a shutdown: SIGKILL to the server's process group, then reap it."""
    assert server.pid is not None
    os.killpg(server.pid, signal.SIGKILL)
    server.stop()


@pytest.fixture(scope="module")
def outage(
    tmp_path_factory: pytest.TempPathFactory,
    mlflow_server: MlflowServer,
    moto_server: MotoServer,
    wide_onnx: Path,
    small_data: Path,
) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("mlflow-outage")
    credentials = {
        "AWS_ACCESS_KEY_ID": _secret("AKIASQF", 13).upper(),
        "AWS_SECRET_ACCESS_KEY": _secret("sqfS3cret/", 30),
        "MLFLOW_TRACKING_USERNAME": "sqf-runner",
        "MLFLOW_TRACKING_PASSWORD": _secret("sqfMlflowPw-", 20),
    }
    # moto accepts any key pair, so the job can run with keys nobody else uses
    endpoint = S3Endpoint(
        name="moto",
        endpoint_url=moto_server.endpoint_url,
        access_key=credentials["AWS_ACCESS_KEY_ID"],
        secret_key=credentials["AWS_SECRET_ACCESS_KEY"],
    )
    bucket = f"outage-{uuid.uuid4().hex[:8]}"
    s3 = endpoint.client()
    create_bucket(s3, bucket, endpoint.region)
    for f in sorted(small_data.iterdir()):
        s3.upload_file(str(f), bucket, f"data/{f.name}")
    s3.upload_file(str(wide_onnx), bucket, "models/wide.onnx")

    name = f"outage-{uuid.uuid4().hex[:8]}"
    doc = onnx_job_doc(wide_onnx, small_data, name=name)
    doc["model"]["uri"] = f"s3://{bucket}/models/wide.onnx"
    doc["data"]["uri"] = f"s3://{bucket}/data/"
    doc["registry"] = {"model_name": f"{name}-model", "alias": "champion"}
    spec = write_spec(tmp / "job.yaml", doc)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env.update(endpoint.env())
    env.update(credentials)

    def argv(result: Path) -> list[str]:
        return [
            SQUEEZEFLOW,
            "run",
            str(spec),
            "--no-progress",
            "--verbose",
            "--tracking-uri",
            mlflow_server.tracking_uri,
            "--artifacts",
            f"s3://{bucket}/sqf",
            "--workdir",
            str(tmp / "work"),
            "--result",
            str(result),
        ]

    # Explicit registry: other tests (and Tracker) set the process-wide registry URI elsewhere.
    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri)

    def versions() -> list[str]:
        return [str(v.version) for v in client.search_model_versions(f"name = '{name}-model'")]

    def runs() -> list[str]:
        exp = client.get_experiment_by_name(name)
        assert exp is not None
        return sorted(r.info.run_id for r in client.search_runs([exp.experiment_id]))

    # The job's output goes to files, not pipes: a verbose job fills a pipe's buffer long before it
    # registers its version, and then blocks on writing (nobody reads a pipe until communicate()).
    out_path, err_path = tmp / "first.out", tmp / "first.err"
    with out_path.open("w") as out_f, err_path.open("w") as err_f:
        job = subprocess.Popen(argv(tmp / "first.json"), stdout=out_f, stderr=err_f, text=True, env=env)

    def registered_or_exited() -> list[str]:
        if job.poll() is not None:
            raise AssertionError(
                f"the job exited ({job.returncode}) before registering a version:\n"
                + err_path.read_text()[-4000:]
            )
        return versions()

    try:
        registered = wait_for(
            "the job to register its model version", registered_or_exited, 300, every_s=0.05
        )
        runs_before = runs()
        _kill_group(mlflow_server)
        down_at = time.monotonic()
        job.wait(timeout=240)
        gave_up_after = time.monotonic() - down_at
    finally:
        job.kill()
        mlflow_server.start()
    first = subprocess.CompletedProcess(job.args, job.returncode, out_path.read_text(), err_path.read_text())
    second = subprocess.run(argv(tmp / "second.json"), capture_output=True, text=True, timeout=600, env=env)
    result = json.loads((tmp / "second.json").read_text()) if (tmp / "second.json").exists() else {}
    yield Scenario(
        name=name,
        model_name=f"{name}-model",
        bucket=bucket,
        endpoint=endpoint,
        credentials=credentials,
        first=first,
        gave_up_after_s=gave_up_after,
        runs_before_outage=runs_before,
        versions_before_outage=registered,
        second=second,
        result=result,
        mlflow=mlflow_server,
    )


def test_job_gives_up_with_exit_3_within_bounded_time_when_mlflow_dies_mid_job(outage: Scenario) -> None:
    error = " ".join(outage.first.stderr.split())
    assert outage.first.returncode == 3, outage.first.stderr[-4000:]
    assert "Traceback" not in outage.first.stderr, outage.first.stderr[-4000:]
    assert f"error (InfrastructureError): MLflow at {outage.mlflow.tracking_uri} is unreachable" in error, (
        error
    )
    assert "3 attempts" in error, error
    assert outage.gave_up_after_s < GIVE_UP_WITHIN_S, f"gave up after {outage.gave_up_after_s:.0f} s"


def test_rerun_after_the_outage_continues_without_duplicate_runs_models_or_versions(outage: Scenario) -> None:
    assert outage.second.returncode == 0, outage.second.stderr[-4000:]
    result = outage.result
    assert result["promotion"]["promoted"] is True, result["promotion"]["reason"]
    client = outage.client()
    exp = outage.experiment_id()
    runs = client.search_runs([exp])
    jobs = [r for r in runs if r.data.tags.get("squeezeflow.kind") == "job"]
    candidates = [r for r in runs if r.data.tags.get("squeezeflow.kind") == "candidate"]
    assert [r.info.run_id for r in jobs] == [result["parent_run_id"]], "more than one job run"
    assert sorted(r.info.run_name for r in candidates) == ["int8-cal128", "int8-cal64"], (
        "duplicate candidates"
    )
    assert sorted(r.info.run_id for r in runs) == outage.runs_before_outage, "the rerun made new runs"
    for run in [*jobs, *candidates]:
        models = client.search_logged_models([exp], f"source_run_id = '{run.info.run_id}'")
        assert len(models) == 1, f"{run.info.run_name}: {len(models)} LoggedModels"
        assert models[0].status == LoggedModelStatus.READY
    assert [row["run_id"] for row in result["candidates"]] == [
        next(r.info.run_id for r in candidates if r.info.run_name == label)
        for label in ("int8-cal128", "int8-cal64")
    ]
    versions = client.search_model_versions(f"name = '{outage.model_name}'")
    assert (
        [str(v.version) for v in versions]
        == outage.versions_before_outage
        == [result["promotion"]["version"]]
    )
    assert str(client.get_model_version_by_alias(outage.model_name, "champion").version) == "1"


def _everything_the_job_left(outage: Scenario) -> dict[str, str]:
    client = outage.client()
    exp = outage.experiment_id()
    where: dict[str, str] = {
        "first run stdout": outage.first.stdout,
        "first run stderr": outage.first.stderr,
        "second run stdout": outage.second.stdout,
        "second run stderr": outage.second.stderr,
        "result JSON": json.dumps(outage.result),
    }
    for run in client.search_runs([exp]):
        where[f"run {run.info.run_name} params and tags"] = json.dumps([run.data.params, run.data.tags])
    for model in client.search_logged_models([exp]):
        where[f"LoggedModel {model.name} {model.model_id}"] = json.dumps([model.params, model.tags])
    registered = client.get_registered_model(outage.model_name)
    where["registered model"] = json.dumps([registered.tags, registered.description])
    for v in client.search_model_versions(f"name = '{outage.model_name}'"):
        where[f"model version {v.version}"] = json.dumps([v.tags, v.description, v.source])
    for path in (outage.mlflow.artifacts_dir / exp).rglob("*"):
        if path.is_file():
            where[f"MLflow artifact {path}"] = path.read_bytes().decode("utf-8", "replace")
    s3 = outage.endpoint.client()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=outage.bucket, Prefix="sqf/"):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=outage.bucket, Key=obj["Key"])["Body"].read()
            where[f"s3 object {obj['Key']}"] = body.decode("utf-8", "replace")
    return where


def test_no_credential_appears_in_logs_mlflow_records_or_reports(outage: Scenario) -> None:
    where = _everything_the_job_left(outage)
    kinds = {k.split(" ")[0] for k in where}
    assert {"first", "second", "result", "run", "LoggedModel", "registered", "model", "MLflow", "s3"} <= kinds
    assert any(k.startswith("s3 object sqf/records/promote/") for k in where), "no promotion record scanned"
    assert any(k.endswith(".html") for k in where) and any(k.endswith(".md") for k in where), "no report"
    secrets_ = {
        k: v for k, v in outage.credentials.items() if k != "MLFLOW_TRACKING_USERNAME"
    }  # the user name is not a secret
    leaks = [
        f"{what} in {place}" for place, text in where.items() for what, s in secrets_.items() if s in text
    ]
    assert leaks == []
