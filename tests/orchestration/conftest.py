"""The single-worker `airflow dags test` run of the compress DAG, shared by the tests that inspect it and
by the Celery test that compares its own result with it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.airflow_env import DAG_ID, airflow, airflow_env, migrate_db
from tests.reference import job_doc, write_spec


@pytest.fixture(scope="session")
def single_worker_run(
    tmp_path_factory: pytest.TempPathFactory,
    mlflow_server: Any,
    preferred_s3_endpoint: Any,
    preferred_s3_bucket: str,
    wide_model: Path,
    animal_mnist: Path,
) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("airflow-dags-test")
    spec = write_spec(base / "job.yaml", job_doc(wide_model, animal_mnist, name="af-dags-test"))
    env = airflow_env(
        base / "home",
        tracking_uri=mlflow_server.tracking_uri,
        s3=preferred_s3_endpoint,
        artifacts=f"s3://{preferred_s3_bucket}/dags-test",
        spec=spec,
    )
    migrate_db(env)
    t0 = time.monotonic()
    out = airflow(env, "dags", "test", DAG_ID)
    yield {
        "home": base / "home",
        "env": env,
        "spec": spec,
        "seconds": time.monotonic() - t0,
        "log": out.stdout + out.stderr,
    }
