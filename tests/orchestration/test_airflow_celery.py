"""Scale-out on the orchestrator's machinery, proven: the compress DAG on Airflow's CeleryExecutor, with a
PostgreSQL metadata database and a Redis broker (Debian's packages, started on loopback), an API server, a
scheduler, a DAG processor and two Celery workers of one slot each.

One DAG run shows all of it. The round's two trials run side by side, one on each worker (overlapping
task instance times), and no stage ever runs more than the spec's ``search.parallel_trials`` at once
(the scheduler's ``max_active_tis_per_dagrun``). While the first candidate is being built (its MLflow run
exists), its worker is SIGKILLed with the task under it and started again; Airflow finds the task's
heartbeat gone, fails that try and retries it (the DAG's retries), the run succeeds, and MLflow holds
exactly one run and one LoggedModel per candidate and one new model version. The result must equal the
single-worker `airflow dags test` run's."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.airflow_env import DAG_ID, BackgroundProcess, airflow, airflow_env
from tests.debian_services import PostgresServer, RedisServer, missing_postgres, missing_redis
from tests.reference import FAST_RECIPES, job_doc, write_spec
from tests.servers import ServerProcess, free_port, log_tail, venv_tool

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

RUN_TIMEOUT_S = 900
WORKERS = ("worker-a", "worker-b")
JOB = "af-celery"
PARALLEL_TRIALS = 2
STAGES = ("optimize", "gate", "benchmark")
LABELS = [r["name"] for r in FAST_RECIPES]
# The trial whose worker is killed mid-build (map index i builds recipe i): the static int8 candidate, the
# quick one to build and the one promoted, so its retry is what the new model version comes from.
KILLED_TASK, KILLED_INDEX = "optimize", 0
# A try whose heartbeat is this old is failed (and retried) by the scheduler; the default is 300 s.
HEARTBEAT_TIMEOUT_S = 30
# The DAG waits 30 s before a retry; what this test proves is that the retry happens and leaves no
# duplicates, not how long it waits, so a cluster policy in this installation's own AIRFLOW_HOME/config
# (on every Airflow process's path) makes it 1 s.
LOCAL_SETTINGS = """from datetime import timedelta


def task_policy(task):
    task.retry_delay = timedelta(seconds=1)
"""


def _query(pg: PostgresServer, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg2

    with (
        psycopg2.connect(host="127.0.0.1", port=pg.port, user=pg.user, dbname=pg.database) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(sql, args)
        return list(cur.fetchall())


def _kill_a_building_trial(
    pg: PostgresServer, client: Any, workers: dict[str, BackgroundProcess]
) -> dict[str, Any] | None:
    """When a candidate build is running and has created its MLflow run: SIGKILL its worker's process
    tree, start the worker again, and say what was killed; None while there is nothing to kill yet."""
    running = _query(
        pg,
        "SELECT hostname, try_number FROM task_instance WHERE dag_id = %s AND task_id = %s "
        "AND map_index = %s AND state = 'running' AND hostname IN %s",
        DAG_ID,
        KILLED_TASK,
        KILLED_INDEX,
        tuple(workers),
    )
    if not running:
        return None
    host, try_number = running[0]
    experiment = client.get_experiment_by_name(JOB)
    if experiment is None:
        return None
    label = LABELS[KILLED_INDEX]
    runs = client.search_runs(
        [experiment.experiment_id],
        f"tags.`squeezeflow.kind` = 'candidate' and attributes.run_name = '{label}'",
    )
    if not runs:
        return None
    pids = workers[host].kill_tree()
    killed = {
        "map_index": KILLED_INDEX,
        "label": label,
        "host": host,
        "try_number": try_number,
        "run_id": runs[0].info.run_id,
        "pids": pids,
    }
    workers[host].start()
    return killed


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
    doc = job_doc(wide_model, animal_mnist, name=JOB)
    doc["search"]["parallel_trials"] = PARALLEL_TRIALS
    spec = write_spec(base / "job.yaml", doc)
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
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            # tests/ for the hostname callable; components/ so the Airflow processes run this tree's
            # package, not whichever checkout the virtual environment's editable install points at.
            "PYTHONPATH": os.pathsep.join([repo, str(Path(repo) / "components")]),
        },
    )
    (base / "home" / "config").mkdir(parents=True)
    (base / "home" / "config" / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
    procs: list[Any] = []
    workers: dict[str, BackgroundProcess] = {}
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri)
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
            workers[w] = BackgroundProcess(w, argv, wenv, base / f"{w}.log").start()
            procs.append(workers[w])

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
        killed: dict[str, Any] | None = None
        while time.monotonic() - t0 < RUN_TIMEOUT_S:
            rows = _query(pg, "SELECT state FROM dag_run WHERE dag_id = %s AND run_type = 'manual'", DAG_ID)
            state = rows[0][0] if rows else None
            if state in ("success", "failed"):
                break
            if killed is None:
                killed = _kill_a_building_trial(pg, client, workers)
            for p in procs:
                if isinstance(p, BackgroundProcess):
                    assert p.alive(), f"{p.name} died:\n{log_tail(p.log)}"
            time.sleep(0.5 if killed is None else 3)
        seconds = time.monotonic() - t0
        logs = "\n".join(
            f"--- {p}:\n{log_tail(base / p, 40)}" for p in ("scheduler.log", *(f"{w}.log" for w in WORKERS))
        )
        assert state == "success", f"the run ended {state!r} after {seconds:.0f} s\n{logs}"
        assert killed is not None, "no candidate build was caught running to kill its worker"
        tis = _query(
            pg,
            "SELECT task_id, map_index, state, hostname FROM task_instance WHERE dag_id = %s "
            "ORDER BY task_id, map_index",
            DAG_ID,
        )
        # Every try of every task instance: the earlier ones are kept in task_instance_history.
        tries = _query(
            pg,
            "SELECT task_id, map_index, try_number, state, hostname, start_date, end_date "
            "FROM task_instance WHERE dag_id = %s UNION ALL "
            "SELECT task_id, map_index, try_number, state, hostname, start_date, end_date "
            "FROM task_instance_history WHERE dag_id = %s ORDER BY 1, 2, 3",
            DAG_ID,
            DAG_ID,
        )
        (promote_value,) = _query(
            pg,
            "SELECT value FROM xcom WHERE dag_id = %s AND task_id = 'promote' AND key = 'return_value'",
            DAG_ID,
        )[0]
        result = promote_value if isinstance(promote_value, dict) else json.loads(promote_value)
        yield {"tis": tis, "tries": tries, "result": result, "seconds": seconds, "killed": killed}
    finally:
        for p in reversed(procs):
            p.stop()
        redis.stop()
        pg.stop()


def test_mapped_candidates_run_on_both_celery_workers(celery_run: dict[str, Any]) -> None:
    mapped = [(t, i, s, h) for t, i, s, h in celery_run["tis"] if t in STAGES]
    assert len(mapped) == 6 and {s for _, _, s, _ in mapped} == {"success"}, mapped
    hosts = {h for *_, h in mapped}
    assert hosts == set(WORKERS), f"mapped task instances ran on {hosts}"


def _max_overlap(spans: list[tuple[datetime, datetime]]) -> int:
    """The most spans open at one instant (a span ending as another starts does not overlap it)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = now = 0
    for _, step in events:  # at one instant, -1 sorts before +1
        now += step
        most = max(most, now)
    return most


def test_a_rounds_trials_overlap_on_both_workers_within_the_parallel_trials_cap(
    celery_run: dict[str, Any],
) -> None:
    tries = [
        {"task": t, "index": i, "try": n, "state": s, "host": h, "start": a, "end": b}
        for t, i, n, s, h, a, b in celery_run["tries"]
        if t in STAGES and a is not None and b is not None
    ]
    overlapping = {
        (x["task"], x["index"], x["host"], y["task"], y["index"], y["host"])
        for x in tries
        for y in tries
        if x["index"] < y["index"]
        and x["host"] != y["host"]
        and x["state"] == y["state"] == "success"
        and x["start"] < y["end"]
        and y["start"] < x["end"]
    }
    assert overlapping, f"no two trials of the round ran at the same time on two workers: {tries}"
    for stage in STAGES:
        spans = [(x["start"], x["end"]) for x in tries if x["task"] == stage]
        assert len(spans) >= len(LABELS), (stage, tries)
        assert _max_overlap(spans) <= PARALLEL_TRIALS, (
            f"{stage} ran more than search.parallel_trials={PARALLEL_TRIALS} at once: {spans}"
        )


def test_a_worker_killed_mid_trial_is_retried_by_airflow_without_duplicates_in_mlflow(
    celery_run: dict[str, Any], mlflow_server: Any
) -> None:
    from mlflow import MlflowClient

    killed = celery_run["killed"]
    attempts = sorted(
        (n, s, h)
        for t, i, n, s, h, *_ in celery_run["tries"]
        if t == KILLED_TASK and i == killed["map_index"]
    )
    assert len(attempts) >= 2 and attempts[-1][1] == "success", attempts
    assert attempts[0][0] == killed["try_number"] and attempts[0][2] == killed["host"], attempts
    assert attempts[0][1] in ("failed", "up_for_retry"), f"the killed try ended {attempts[0][1]!r}"
    spans = sorted(
        (n, a, b)
        for t, i, n, _, _, a, b in celery_run["tries"]
        if t == KILLED_TASK and i == killed["map_index"]
    )
    if spans[0][2] is not None and spans[1][1] is not None:
        waited = (spans[1][1] - spans[0][2]).total_seconds()
        print(f"the killed try was retried {waited:.0f} s after it failed")

    client = MlflowClient(mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri)
    experiment = client.get_experiment_by_name(JOB)
    assert experiment is not None
    exp = experiment.experiment_id
    runs = client.search_runs([exp], "tags.`squeezeflow.kind` = 'candidate'")
    assert Counter(r.info.run_name for r in runs) == Counter(LABELS), "one MLflow run per candidate"
    by_label = {r.info.run_name: r for r in runs}
    assert by_label[killed["label"]].info.run_id == killed["run_id"], "the retry went on in the same run"
    assert {r.info.status for r in runs} == {"FINISHED"}, [(r.info.run_name, r.info.status) for r in runs]
    models = client.search_logged_models([exp], filter_string="name = 'candidate'")
    per_run = Counter(m.source_run_id for m in models)
    assert per_run == Counter(r.info.run_id for r in runs), "one LoggedModel per candidate"
    versions = client.search_model_versions(f"name = '{JOB}-model'")
    assert len(versions) == 1, [(v.version, v.run_id) for v in versions]
    promoted = celery_run["result"]["promotion"]
    assert str(versions[0].version) == str(promoted["version"]), (versions[0].version, promoted)


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
