"""Connections: the MLflow connection type, and the settings a stage runs with.

An MLflow connection (type ``mlflow``, default id ``squeezeflow_mlflow``) holds the tracking URI in its
host (``http://mlflow:5000``, or a host name with ``port`` and ``extra.scheme``) and optional
credentials (login/password for basic auth, or ``extra.token``). S3 comes from an Amazon provider
connection (default ``aws_default``); with no such connection boto3's own chain applies (IRSA, instance
profiles). The credentials are handed to the stage through the process environment for the duration of
one call and removed afterwards; they never enter XCom, MLflow params or the job records.

The artifact store root is resolved in one place, `artifacts_location`: the operator's ``artifacts``
argument, else the Airflow Variable ``squeezeflow_artifacts``, else ``$SQUEEZEFLOW_ARTIFACTS``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook, Variable

from squeezeflow.stages import Settings

DEFAULT_MLFLOW_CONN_ID = "squeezeflow_mlflow"
DEFAULT_AWS_CONN_ID = "aws_default"
ARTIFACTS_ENV = "SQUEEZEFLOW_ARTIFACTS"
#: The Airflow Variable with the artifact store root (environment: AIRFLOW_VAR_SQUEEZEFLOW_ARTIFACTS).
ARTIFACTS_VARIABLE = "squeezeflow_artifacts"


@contextmanager
def patched_environ(values: dict[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) environment variables for the duration of the block."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


class MlflowHook(BaseHook):
    """Reads an MLflow tracking server's address and credentials from an Airflow connection."""

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = DEFAULT_MLFLOW_CONN_ID
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = DEFAULT_MLFLOW_CONN_ID) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema"],
            "relabeling": {
                "host": "Tracking URI or host",
                "login": "Username (basic auth, optional)",
                "password": "Password (basic auth, optional)",
            },
            "placeholders": {
                "host": "http://mlflow.mlflow.svc:5000",
                "extra": '{"token": "<bearer token, optional>", "insecure_tls": false}',
            },
        }

    def tracking_uri(self) -> str:
        conn = self.get_connection(self.mlflow_conn_id)
        host = (conn.host or "").strip()
        if not host:
            raise ValueError(f"connection {self.mlflow_conn_id!r} has no host (the MLflow tracking URI)")
        extra = conn.extra_dejson
        if "://" not in host:
            host = f"{extra.get('scheme', 'http')}://{host}"
        if conn.port and host.count(":") < 2:
            host = f"{host}:{conn.port}"
        return str(host.rstrip("/") + ("/" + str(extra["path"]).strip("/") if extra.get("path") else ""))

    def environment(self) -> dict[str, str | None]:
        """The variables MLflow's client reads, for this connection (None removes an ambient value)."""
        conn = self.get_connection(self.mlflow_conn_id)
        extra = conn.extra_dejson
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri(),
            "MLFLOW_TRACKING_USERNAME": conn.login or None,
            "MLFLOW_TRACKING_PASSWORD": conn.password or None,
            "MLFLOW_TRACKING_TOKEN": extra.get("token") or None,
            "MLFLOW_TRACKING_INSECURE_TLS": "true" if extra.get("insecure_tls") else None,
        }

    def test_connection(self) -> tuple[bool, str]:
        """What the Connections page's *Test* button runs: one authenticated call to the tracking server.
        The answer never quotes the password."""
        from mlflow import MlflowClient

        from squeezeflow.tracking.client import redact_password, redact_uri

        try:
            uri = self.tracking_uri()
        except Exception as err:
            return False, str(err)
        # one quick try: a person is waiting for the answer (MLflow's client retries for minutes)
        quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
        try:
            with patched_environ({**self.environment(), **quick}):
                experiments = MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except Exception as err:  # MLflow raises many types for a refused or unreachable server
            why = redact_password(str(err), uri)[:400]
            return False, f"MLflow at {redact_uri(uri)} did not answer: {why}"
        seen = "an experiment" if experiments else "no experiment yet"
        return True, f"connected to MLflow at {redact_uri(uri)} ({seen} visible)"


def aws_environment(aws_conn_id: str | None) -> dict[str, str | None]:
    """AWS variables boto3 reads, from an Amazon provider connection; empty when no id is given or the
    connection does not exist (then boto3's default chain applies: IRSA, instance profile, the worker's
    environment)."""
    if not aws_conn_id or not _connection_exists(aws_conn_id):
        return {}
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3")
    creds = hook.get_credentials()
    cfg = hook.conn_config
    env: dict[str, str | None] = {
        "AWS_ACCESS_KEY_ID": creds.access_key,
        "AWS_SECRET_ACCESS_KEY": creds.secret_key,
        "AWS_SESSION_TOKEN": creds.token or None,
    }
    if hook.region_name:
        env["AWS_DEFAULT_REGION"] = hook.region_name
    if cfg.endpoint_url:
        env["AWS_ENDPOINT_URL_S3"] = cfg.endpoint_url
    return env


def _connection_exists(conn_id: str) -> bool:
    try:
        BaseHook.get_connection(conn_id)
        return True
    except Exception:
        return False


def artifacts_location(artifacts: str | None = None) -> str:
    """The artifact store root (``s3://bucket/prefix`` or a directory every worker shares) for a stage task,
    the first of these that is set:

    1. ``artifacts``, the operator's (or the DAG factory's) argument;
    2. the Airflow Variable ``squeezeflow_artifacts``, from any Variable source Airflow consults (an
       ``AIRFLOW_VAR_SQUEEZEFLOW_ARTIFACTS`` environment variable, a secrets backend, the metadata
       database); the Airflow chart overlay sets it;
    3. the worker's ``SQUEEZEFLOW_ARTIFACTS`` environment variable.

    Called when a task runs, never while a DAG file is parsed. There is no built-in default: a directory
    local to one worker would scatter a job's records over the workers.

    :raises ValueError: when none of the three is set.
    """
    if artifacts:
        return artifacts
    # default=None: only "not found" falls through; an unreachable Variable source raises (the task retries).
    variable = Variable.get(ARTIFACTS_VARIABLE, default=None)
    if variable:
        return str(variable)
    from_env = os.environ.get(ARTIFACTS_ENV)
    if from_env:
        return from_env
    raise ValueError(
        "no artifact store: pass artifacts='s3://bucket/prefix' to the operator or the DAG factory, set the "
        f"Airflow Variable {ARTIFACTS_VARIABLE!r} (e.g. AIRFLOW_VAR_{ARTIFACTS_VARIABLE.upper()}), "
        f"or set {ARTIFACTS_ENV} on the workers"
    )


@contextmanager
def stage_settings(
    mlflow_conn_id: str | None = DEFAULT_MLFLOW_CONN_ID,
    aws_conn_id: str | None = DEFAULT_AWS_CONN_ID,
    artifacts: str | None = None,
    workdir: str | None = None,
) -> Iterator[Settings]:
    """Settings for one stage call, with the connections' credentials in the environment meanwhile.

    A connection id that does not exist falls back to the environment (``MLFLOW_TRACKING_URI``, the AWS
    chain), so a worker configured by env alone works too. The artifact store: `artifacts_location`.
    """
    env: dict[str, str | None] = {}
    env.update(aws_environment(aws_conn_id))
    if mlflow_conn_id and _connection_exists(mlflow_conn_id):
        env.update(MlflowHook(mlflow_conn_id).environment())
    art = artifacts_location(artifacts)
    wd = workdir or os.environ.get("SQUEEZEFLOW_WORKDIR") or str(Path("/tmp") / "squeezeflow-work")
    with patched_environ(env):
        yield Settings.resolve(artifacts=art, tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"), workdir=wd)
