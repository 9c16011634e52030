"""Scale-out, proven: the compress DAG on Airflow's CeleryExecutor, with a PostgreSQL metadata database
and a Redis broker (Debian's packages, started on loopback), an API server, a scheduler, a DAG processor
and two Celery workers of one slot each. The mapped candidates must run on both workers, and the result
must equal the single-worker `airflow dags test` run's."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.airflow_env import DAG_ID, BackgroundProcess, airflow, airflow_env
from tests.debian_services import PostgresServer, RedisServer, missing_postgres, missing_redis
from tests.reference import job_doc, write_spec
from tests.servers import ServerProcess, free_port, log_tail, venv_tool

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

RUN_TIMEOUT_S = 900
WORKERS = ("worker-a", "worker-b")


def _query(pg: PostgresServer, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg2

    with (
        psycopg2.connect(host="127.0.0.1", port=pg.port, user=pg.user, dbname=pg.database) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(sql, args)
        return list(cur.fetchall())


@pytest.fixture(scope="module")
def celery_run(
    tmp_path_factory: pytest.TempPathFactory,
    mlflow_server: Any,
    preferred_s3_endpoint: Any,
    preferred_s3_bucket: str,
    wide_model: Path,
    animal_mnist: Path,
) -> Iterator[dict[str, Any]]:
    for why in (missing_postgres(), missing_redis()):
        if why:
            pytest.skip(why)
    base = tmp_path_factory.mktemp("airflow-celery")
    spec = write_spec(base / "job.yaml", job_doc(wide_model, animal_mnist, name="af-celery"))
    pg = PostgresServer(database="airflow").start()
    redis = RedisServer().start()
    api_port = free_port()
    repo = str(Path(__file__).resolve().parents[2])
    env = airflow_env(
        base / "home",
        tracking_uri=mlflow_server.tracking_uri,
        s3=preferred_s3_endpoint,
        artifacts=f"s3://{preferred_s3_bucket}/celery",
        spec=spec,
        extra={
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url(),
            "AIRFLOW__CELERY__BROKER_URL": redis.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + pg.url(),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": "squeezeflow-celery-test-secret",
            "AIRFLOW__API__SECRET_KEY": "squeezeflow-celery-test-key",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.airflow_env.worker_hostname",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "PYTHONPATH": repo,
        },
    )
    procs: list[Any] = []
    try:
        airflow(env, "db", "migrate")
        api = ServerProcess(
            "airflow api-server",
            [
                venv_tool("airflow"),
                "api-server",
                "--port",
                str(api_port),
                "--host",
                "127.0.0.1",
                "--workers",
                "1",
            ],
            f"http://127.0.0.1:{api_port}/api/v2/monitor/health",
            base / "api-server.log",
            start_timeout_s=180,
            env=env,
        )
        api.start()
        procs.append(api)
        for name in ("scheduler", "dag-processor"):
            procs.append(
                BackgroundProcess(name, [venv_tool("airflow"), name], env, base / f"{name}.log").start()
            )
        for w in WORKERS:
            wenv = {**env, "SQUEEZEFLOW_TEST_WORKER": w}
            argv = [
                venv_tool("airflow"),
                "celery",
                "worker",
                "--concurrency",
                "1",
                "--celery-hostname",
                f"{w}@%h",
            ]
            procs.append(BackgroundProcess(w, argv, wenv, base / f"{w}.log").start())

        deadline = time.monotonic() + 300
        while not _query(pg, "SELECT dag_id FROM dag WHERE dag_id = %s", DAG_ID):
            assert time.monotonic() < deadline, (
                f"the DAG was never parsed:\n{log_tail(base / 'dag-processor.log')}"
            )
            time.sleep(2)
        airflow(env, "dags", "unpause", DAG_ID)
        t0 = time.monotonic()
        airflow(env, "dags", "trigger", DAG_ID)
        state = None
        while time.monotonic() - t0 < RUN_TIMEOUT_S:
            rows = _query(pg, "SELECT state FROM dag_run WHERE dag_id = %s AND run_type = 'manual'", DAG_ID)
            state = rows[0][0] if rows else None
            if state in ("success", "failed"):
                break
            for p in procs:
                if isinstance(p, BackgroundProcess):
                    assert p.alive(), f"{p.name} died:\n{log_tail(p.log)}"
            time.sleep(3)
        seconds = time.monotonic() - t0
        logs = "\n".join(
            f"--- {p}:\n{log_tail(base / p, 40)}" for p in ("scheduler.log", *(f"{w}.log" for w in WORKERS))
        )
        assert state == "success", f"the run ended {state!r} after {seconds:.0f} s\n{logs}"
        tis = _query(
            pg,
            "SELECT task_id, map_index, state, hostname FROM task_instance WHERE dag_id = %s "
            "ORDER BY task_id, map_index",
            DAG_ID,
        )
        (promote_value,) = _query(
            pg,
            "SELECT value FROM xcom WHERE dag_id = %s AND task_id = 'promote' AND key = 'return_value'",
            DAG_ID,
        )[0]
        result = promote_value if isinstance(promote_value, dict) else json.loads(promote_value)
        yield {"tis": tis, "result": result, "seconds": seconds}
    finally:
        for p in reversed(procs):
            p.stop()
        redis.stop()
        pg.stop()


def test_mapped_candidates_run_on_both_celery_workers(celery_run: dict[str, Any]) -> None:
    mapped = [(t, i, s, h) for t, i, s, h in celery_run["tis"] if t in ("optimize", "gate", "benchmark")]
    assert len(mapped) == 6 and {s for _, _, s, _ in mapped} == {"success"}, mapped
    hosts = {h for *_, h in mapped}
    assert hosts == set(WORKERS), f"mapped task instances ran on {hosts}"


def test_celery_result_equals_the_single_worker_run(
    celery_run: dict[str, Any], single_worker_run: dict[str, Any]
) -> None:
    from tests.airflow_env import xcom_value

    single = xcom_value(single_worker_run["home"], DAG_ID, "promote")
    spread = celery_run["result"]

    def decisions(result: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [
            (r["label"], r["status"], r["gate"], r["metric"], r["size_bytes"], r["eligible"])
            for r in result["candidates"]
        ]

    assert decisions(spread) == decisions(single)
    assert spread["baseline_metric"] == single["baseline_metric"]
    assert spread["promotion"]["candidate_label"] == single["promotion"]["candidate_label"]
    assert spread["promotion"]["promoted"] is True
