"""Fixtures that start real services on loopback (see `tests/servers.py`).

* `mlflow_server` (session): a real MLflow tracking server; `.tracking_uri`, `.stop()`, `.start()`, `.down()`.
* `s3_endpoint` (session, parametrized `moto` / `external`): an `S3Endpoint`; `external` only when
  `SQUEEZEFLOW_TEST_S3_ENDPOINT` is set (`.ci/run` sets it to a local Ceph RADOS Gateway).
* `s3_env` (function): the AWS_* environment pointed at the current endpoint; yields the endpoint.
* `s3_bucket` (function): a fresh, real-S3-valid bucket on the current endpoint, emptied and deleted after.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Airflow reads its configuration when first imported: keep the tests' parsing away from ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", str(Path(tempfile.gettempdir()) / "squeezeflow-airflow-tests"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import boto3
import pytest

from tests.servers import (
    MOTO_ACCESS_KEY,
    MOTO_SECRET_KEY,
    MlflowServer,
    MotoServer,
    S3Endpoint,
    check_reachable,
    create_bucket,
    empty_and_delete_bucket,
    external_endpoint_from_env,
    new_bucket_name,
)

pytest_plugins = ["tests.reference"]

# Decided at collection time: the external endpoint is a test parameter only when it is configured.
_S3_PARAMS: list[str] = ["moto"] + (["external"] if external_endpoint_from_env() is not None else [])

# Variables that would override or bypass what `s3_env` sets.
_AWS_VARS_TO_CLEAR = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto-server"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", params=_S3_PARAMS, ids=_S3_PARAMS)
def s3_endpoint(request: pytest.FixtureRequest) -> S3Endpoint:
    if request.param == "moto":
        moto: MotoServer = request.getfixturevalue("moto_server")
        return S3Endpoint(
            name="moto",
            endpoint_url=moto.endpoint_url,
            access_key=MOTO_ACCESS_KEY,
            secret_key=MOTO_SECRET_KEY,
        )
    endpoint = external_endpoint_from_env()
    assert endpoint is not None, "SQUEEZEFLOW_TEST_S3_ENDPOINT disappeared after collection"
    check_reachable(endpoint)
    return endpoint


def _aws_env(
    endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Endpoint]:
    for name in _AWS_VARS_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    # An own config file: no ~/.aws settings leak in, and plain `boto3.client("s3")` uses path-style too.
    config_dir = tmp_path_factory.mktemp("aws-config")
    config_file = config_dir / "config"
    config_file.write_text(
        f"[default]\nregion = {endpoint.region}\ns3 =\n    addressing_style = path\n", encoding="utf-8"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_file))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(config_dir / "credentials"))
    for name, value in endpoint.env().items():
        monkeypatch.setenv(name, value)
    # boto3's default session caches the credentials it resolved first, so a `boto3.client("s3")` made
    # under another endpoint's environment would keep signing with that endpoint's keys.
    boto3.DEFAULT_SESSION = None
    try:
        yield endpoint
    finally:
        boto3.DEFAULT_SESSION = None


@pytest.fixture
def s3_env(
    s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Endpoint]:
    yield from _aws_env(s3_endpoint, monkeypatch, tmp_path_factory)


@pytest.fixture
def one_s3_env(
    preferred_s3_endpoint: S3Endpoint,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[S3Endpoint]:
    """`s3_env` for expensive tests that run once: on Ceph when CI started it, else on moto."""
    yield from _aws_env(preferred_s3_endpoint, monkeypatch, tmp_path_factory)


@pytest.fixture
def one_s3_bucket(one_s3_env: S3Endpoint) -> Iterator[str]:
    client = one_s3_env.client()
    name = new_bucket_name()
    create_bucket(client, name, one_s3_env.region)
    try:
        yield name
    finally:
        empty_and_delete_bucket(client, name)


@pytest.fixture
def s3_bucket(s3_env: S3Endpoint) -> Iterator[str]:
    client = s3_env.client()
    name = new_bucket_name()
    create_bucket(client, name, s3_env.region)
    try:
        yield name
    finally:
        empty_and_delete_bucket(client, name)


@pytest.fixture(scope="session")
def preferred_s3_endpoint(request: pytest.FixtureRequest) -> S3Endpoint:
    """One S3 endpoint for the expensive orchestration tests: the real one (Ceph RGW) when CI started it,
    moto otherwise; they run once, not once per endpoint."""
    endpoint = external_endpoint_from_env()
    if endpoint is not None:
        check_reachable(endpoint)
        return endpoint
    moto: MotoServer = request.getfixturevalue("moto_server")
    return S3Endpoint(
        name="moto", endpoint_url=moto.endpoint_url, access_key=MOTO_ACCESS_KEY, secret_key=MOTO_SECRET_KEY
    )


@pytest.fixture(scope="session")
def preferred_s3_bucket(preferred_s3_endpoint: S3Endpoint) -> Iterator[str]:
    client = preferred_s3_endpoint.client()
    name = new_bucket_name()
    create_bucket(client, name, preferred_s3_endpoint.region)
    try:
        yield name
    finally:
        empty_and_delete_bucket(client, name)
