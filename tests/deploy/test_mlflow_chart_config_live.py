"""The chart's MLflow configuration, exercised for real.

`helm template` renders the chart with the test's endpoints as values; the MLflow container's command,
args and env are read out of the rendered Deployment, the secret references resolved the way the kubelet
would (from stand-in Secrets holding the test's credentials), and that exact command line is started with
a PostgreSQL backend (Debian's packages) and the S3 artifact store on the test's S3 endpoint (moto, and
Ceph RGW when CI sets it up). A compress job then runs through it. The only change made to the rendered
command line: it binds 127.0.0.1 instead of 0.0.0.0, and `mlflow` is the venv's.

With `mlflow.auth.enabled` the same command line runs MLflow's basic-auth app, its configuration file taken
from the rendered ConfigMap (written where the test can read it: the mount's stand-in) and its admin login
from a stand-in Secret; it must refuse a request without credentials. The backend store URI's sslmode is
checked against the test's PostgreSQL, which offers no TLS.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import psycopg2
import pytest
import sqlalchemy

from squeezeflow.runner import run_job
from squeezeflow.spec.load import parse_spec
from squeezeflow.stages import Settings
from tests.debian_services import PostgresServer, missing_postgres
from tests.deploy.conftest import RenderFn, Rendering, resolve_env
from tests.reference import job_doc
from tests.servers import LOOPBACK, MLFLOW_START_TIMEOUT_S, S3Endpoint, ServerProcess, free_port, venv_tool

pytestmark = pytest.mark.integration

DB_SECRET = "squeezeflow-mlflow-db"
ENV_SECRET = "squeezeflow-env"
AUTH_SECRET = "squeezeflow-mlflow-auth"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    reason = missing_postgres()
    if reason:
        pytest.skip(reason)
    server = PostgresServer(database="mlflow").start()
    try:
        yield server
    finally:
        server.stop()


def mlflow_rendering(
    render: RenderFn,
    postgres: PostgresServer,
    bucket: str,
    region: str,
    port: int,
    sets: dict[str, Any] | None = None,
) -> Rendering:
    return render(
        sets={
            "mlflow.backendStore.host": LOOPBACK,
            "mlflow.backendStore.port": postgres.port,
            "mlflow.backendStore.database": postgres.database,
            "mlflow.backendStore.sslmode": "disable",
            "mlflow.artifacts.destination": f"s3://{bucket}/mlflow",
            "mlflow.artifacts.region": region,
            "mlflow.artifacts.addressingStyle": "path",
            "mlflow.port": port,
            "mlflow.workers": 1,
            "mlflow.allowedHosts[0]": f"{LOOPBACK}:{port}",
            **(sets or {}),
        }
    )


def mlflow_container(render: RenderFn, postgres: PostgresServer, bucket: str, region: str, port: int) -> Any:
    deployment = mlflow_rendering(render, postgres, bucket, region, port).get("Deployment", "-mlflow")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_compress_job_through_mlflow_started_as_the_chart_configures_it(
    render: RenderFn,
    postgres: PostgresServer,
    one_s3_env: S3Endpoint,
    one_s3_bucket: str,
    tiny_model: Path,
    animal_mnist: Path,
    tmp_path: Path,
) -> None:
    port = free_port()
    container = mlflow_container(render, postgres, one_s3_bucket, one_s3_env.region, port)

    # What the kubelet would run: command + args, with the env the Secrets provide.
    argv = [*container["command"], *container["args"]]
    assert argv[:2] == ["mlflow", "server"]
    host = argv.index("--host") + 1
    assert argv[host] == "0.0.0.0"
    argv[host] = LOOPBACK
    argv[0] = venv_tool("mlflow")
    secrets = {
        DB_SECRET: {"username": postgres.user, "password": "unused-trust-auth"},
        ENV_SECRET: {
            "AWS_ACCESS_KEY_ID": one_s3_env.access_key,
            "AWS_SECRET_ACCESS_KEY": one_s3_env.secret_key,
            "AWS_ENDPOINT_URL_S3": one_s3_env.endpoint_url,
        },
    }
    env = resolve_env(container["env"], secrets)
    assert env["MLFLOW_S3_ENDPOINT_URL"] == one_s3_env.endpoint_url
    assert env["MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE"] == "path"
    # Nothing of the test's own environment leaks in beyond what an image provides.
    server_env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env}
    server_env["HOME"] = server_env["MLFLOW_TMP_DIR"] = str(tmp_path / "home")
    (tmp_path / "home").mkdir()
    server_cwd = tmp_path / "cwd"
    server_cwd.mkdir()

    tracking_uri = f"http://{LOOPBACK}:{port}"
    server = ServerProcess(
        "mlflow server (chart configuration)",
        argv,
        f"{tracking_uri}/health",
        tmp_path / "mlflow-server.log",
        start_timeout_s=MLFLOW_START_TIMEOUT_S * 2,
        env=server_env,
        cwd=server_cwd,
    )
    with server:
        s3 = one_s3_env.client()
        for f in sorted(animal_mnist.iterdir()):
            s3.upload_file(str(f), one_s3_bucket, f"datasets/animal-mnist/{f.name}")
        s3.upload_file(str(tiny_model), one_s3_bucket, f"models/{tiny_model.name}")
        name = f"chart-{one_s3_env.name}-{one_s3_bucket[-8:]}"
        doc = job_doc(
            f"s3://{one_s3_bucket}/models/{tiny_model.name}",
            f"s3://{one_s3_bucket}/datasets/animal-mnist/",
            name=name,
        )
        # every candidate to the gate, however slow the tiny model's int8 runs: the test follows the
        # gate's evidence through the server's artifact proxy into the bucket
        doc["search"]["skip_slower_than"] = None
        spec = parse_spec(doc)
        settings = Settings(
            artifacts=f"s3://{one_s3_bucket}/squeezeflow", tracking_uri=tracking_uri, workdir=tmp_path / "w"
        )
        result = run_job(spec, settings, progress=False)

        client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        runs = client.search_runs([result.experiment_id])
        assert len(runs) == 3  # the job's run and one per recipe
        # Run artifacts went through the server's proxy into the bucket, under the chart's destination.
        evidence = [r for r in runs if r.info.run_id != result.parent_run_id]
        assert evidence[0].info.artifact_uri.startswith("mlflow-artifacts:")
        listed = client.list_artifacts(evidence[0].info.run_id, "gate")
        assert [a.path for a in listed] == ["gate/evidence.json"]

    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=one_s3_bucket, Prefix="mlflow/")
        for o in page.get("Contents", [])
    ]
    assert any(k.endswith("/gate/evidence.json") for k in keys), keys
    # The runs live in PostgreSQL, not in a SQLite file or ./mlruns next to the server.
    with (
        psycopg2.connect(
            host=LOOPBACK, port=postgres.port, user=postgres.user, dbname=postgres.database
        ) as db,
        db.cursor() as cur,
    ):
        cur.execute("SELECT count(*) FROM runs WHERE experiment_id = %s", (int(result.experiment_id),))
        row = cur.fetchone()
    assert row is not None and row[0] == 3
    assert not any(server_cwd.iterdir()), (
        f"the server wrote into its working directory: {list(server_cwd.iterdir())}"
    )


def _status(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url, method="GET")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_mlflow_with_basic_auth_refuses_requests_without_the_credentials_from_the_secret(
    render: RenderFn,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if importlib.util.find_spec("flask_wtf") is None:
        pytest.skip(
            "MLflow's basic-auth app needs Flask-WTF (mlflow's `auth` extra), which this environment "
            "lacks; the image needs it too (the `server` extra)"
        )
    port = free_port()
    rendering = mlflow_rendering(
        render, postgres, "unused-bucket", "us-east-1", port, {"mlflow.auth.enabled": True}
    )
    (container,) = rendering.get("Deployment", "-mlflow")["spec"]["template"]["spec"]["containers"]
    argv = [*container["command"], *container["args"]]
    assert argv[:4] == ["mlflow", "server", "--app-name", "basic-auth"]
    host = argv.index("--host") + 1
    argv[host] = LOOPBACK
    argv[0] = venv_tool("mlflow")
    admin = ("sqf-admin", "a-long-enough-admin-password")
    secrets = {
        DB_SECRET: {"username": postgres.user, "password": "unused-trust-auth"},
        AUTH_SECRET: {
            "admin-username": admin[0],
            "admin-password": admin[1],
            "flask-secret-key": "test-csrf-key-0123456789abcdef",
        },
    }
    env = resolve_env(container["env"], secrets)
    # The ConfigMap's file, where the kubelet would mount it (here: under tmp_path).
    config_path = Path(env["MLFLOW_AUTH_CONFIG_PATH"])
    config_map = rendering.get("ConfigMap", "-mlflow-auth")
    local_config = tmp_path / "auth" / config_path.name
    local_config.parent.mkdir()
    local_config.write_text(config_map["data"][config_path.name])
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(local_config)
    server_env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env}
    if os.environ.get("PYTHONPATH"):  # Flask-WTF from outside the venv (an image has it in site-packages)
        server_env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    server_env["HOME"] = server_env["MLFLOW_TMP_DIR"] = str(tmp_path / "home")
    (tmp_path / "home").mkdir()

    tracking_uri = f"http://{LOOPBACK}:{port}"
    server = ServerProcess(
        "mlflow server (chart configuration, basic-auth)",
        argv,
        f"{tracking_uri}/health",  # the probes' path stays open
        tmp_path / "mlflow-server.log",
        start_timeout_s=MLFLOW_START_TIMEOUT_S * 2,
        env=server_env,
        cwd=tmp_path,
    )
    search = f"{tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    with server:
        assert _status(search) == 401
        assert _status(search, (admin[0], "a-wrong-password-of-length")) == 401
        assert _status(search, admin) == 200
        # A client with the envSecret keys MLFLOW_TRACKING_USERNAME/PASSWORD gets through.
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        experiment_id = client.create_experiment(f"basic-auth-{port}")
        assert client.get_experiment(experiment_id).name == f"basic-auth-{port}"
    # Users live in the backend store's PostgreSQL database, next to the runs.
    with (
        psycopg2.connect(
            host=LOOPBACK, port=postgres.port, user=postgres.user, dbname=postgres.database
        ) as db,
        db.cursor() as cur,
    ):
        cur.execute("SELECT username, is_admin FROM users")
        assert cur.fetchall() == [(admin[0], True)]


@pytest.mark.parametrize("sslmode", ["disable", "require"])
def test_backend_store_uri_carries_the_sslmode_to_libpq(
    render: RenderFn, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch, sslmode: str
) -> None:
    rendering = mlflow_rendering(
        render, postgres, "unused-bucket", "us-east-1", 5000, {"mlflow.backendStore.sslmode": sslmode}
    )
    (container,) = rendering.get("Deployment", "-mlflow")["spec"]["template"]["spec"]["containers"]
    uri = next(e["value"] for e in container["env"] if e["name"] == "MLFLOW_BACKEND_STORE_URI")
    assert uri.endswith(f"?sslmode={sslmode}")
    # Only the URI speaks: no PGSSLMODE in this process.
    monkeypatch.delenv("PGSSLMODE", raising=False)
    monkeypatch.setenv("PGUSER", postgres.user)
    engine = sqlalchemy.create_engine(uri)
    try:
        if sslmode == "disable":
            with engine.connect() as conn:
                assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
        else:
            # The test's PostgreSQL offers no TLS: `require` must refuse to fall back to plain text.
            with pytest.raises(sqlalchemy.exc.OperationalError, match="SSL"):
                engine.connect()
    finally:
        engine.dispose()
