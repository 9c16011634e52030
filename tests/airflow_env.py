"""A throwaway Airflow installation for the tests: its own AIRFLOW_HOME, the repo's dags/ folder, and
connections for a real MLflow server and S3 endpoint given as environment variables (the way a
deployment passes them), never as DAG code."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.servers import S3Endpoint, venv_tool

REPO = Path(__file__).resolve().parents[1]
MLFLOW_SECRET = "sfw-Secret-5c9e1f"
DAGS = REPO / "dags"

# Variables of the test process that must not leak into Airflow's: the S3 credentials have to come
# from the aws_default connection.
_SCRUB = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


def airflow_env(
    home: Path,
    *,
    tracking_uri: str,
    s3: S3Endpoint | None,
    artifacts: str,
    spec: Path | None = None,
    jobs_dir: Path | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # The test server does not check credentials; they are here to prove they leak nowhere.
            "AIRFLOW_CONN_SQUEEZEFLOW_MLFLOW": json.dumps(
                {"conn_type": "mlflow", "host": tracking_uri, "login": "sfw-user", "password": MLFLOW_SECRET}
            ),
            "SQUEEZEFLOW_ARTIFACTS": artifacts,
            "SQUEEZEFLOW_WORKDIR": str(home / "squeezeflow-work"),
            "PATH": f"{Path(venv_tool('airflow')).parent}:{os.environ.get('PATH', '')}",
        }
    )
    if s3 is not None:
        env["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(
            {
                "conn_type": "aws",
                "login": s3.access_key,
                "password": s3.secret_key,
                "extra": {"endpoint_url": s3.endpoint_url, "region_name": s3.region},
            }
        )
        env["AWS_DEFAULT_REGION"] = s3.region
    if spec is not None:
        env["SQUEEZEFLOW_SPEC"] = str(spec)
    if jobs_dir is not None:
        env["SQUEEZEFLOW_JOBS_DIR"] = str(jobs_dir)
    env.update(extra or {})
    home.mkdir(parents=True, exist_ok=True)
    return env


def airflow(
    env: dict[str, str], *args: str, timeout: float = 900, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the ``airflow`` CLI; on failure the assertion carries the output's tail."""
    out = subprocess.run(
        [venv_tool("airflow"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=env["AIRFLOW_HOME"],
    )
    if check and out.returncode != 0:
        raise AssertionError(
            f"airflow {' '.join(args)} exited {out.returncode}:\n{(out.stdout + out.stderr)[-6000:]}"
        )
    return out


_MIGRATED_DB: Path | None = None


def migrate_db(env: dict[str, str]) -> None:
    """`airflow db migrate` for the SQLite metadata database in ``env``'s AIRFLOW_HOME. The first call in
    a test process migrates a template database (10-30 s on two shared cores); every call copies it, the
    same fresh schema, in milliseconds."""
    global _MIGRATED_DB
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in env, "only the default SQLite database is copied"
    if _MIGRATED_DB is None:
        template = Path(tempfile.mkdtemp(prefix="squeezeflow-airflow-db-"))
        atexit.register(shutil.rmtree, template, True)
        airflow({**env, "AIRFLOW_HOME": str(template)}, "db", "migrate")
        _MIGRATED_DB = template / "airflow.db"
    shutil.copyfile(_MIGRATED_DB, Path(env["AIRFLOW_HOME"]) / "airflow.db")


def task_instances(home: Path, dag_id: str) -> list[dict[str, Any]]:
    """Task instances of ``dag_id`` from the metadata database (SQLite), latest run last."""
    with sqlite3.connect(home / "airflow.db") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT task_id, map_index, state, rendered_map_index, hostname, run_id FROM task_instance "
            "WHERE dag_id = ? ORDER BY run_id, task_id, map_index",
            (dag_id,),
        ).fetchall()
    return [dict(r) for r in rows]


def xcom_value(home: Path, dag_id: str, task_id: str, key: str = "return_value") -> Any:
    with sqlite3.connect(home / "airflow.db") as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = ? "
            "ORDER BY timestamp DESC LIMIT 1",
            (dag_id, task_id, key),
        ).fetchone()
    if row is None:
        return None
    value = row[0]
    return json.loads(value) if isinstance(value, str | bytes) else value


def worker_hostname() -> str:
    """``[core] hostname_callable`` for the Celery test: two workers on one machine, told apart."""
    return os.environ.get("SQUEEZEFLOW_TEST_WORKER") or os.uname().nodename


DAG_ID = "squeezeflow_compress_on_new_model"


class BackgroundProcess:
    """A long-running Airflow component (scheduler, worker...) in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BackgroundProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as fh:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.env["AIRFLOW_HOME"],
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill_tree(self) -> list[int]:
        """SIGKILL the process and everything under it, the way a lost machine takes them: its process
        group, and the processes that left it (Airflow's task supervisor starts each task runner in a
        group of its own). Returns the pids killed; `start` starts the process again."""
        import contextlib
        import signal

        import psutil

        assert self._proc is not None, f"{self.name} is not running"
        root = psutil.Process(self._proc.pid)
        tree = [root, *root.children(recursive=True)]
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait(10)
        psutil.wait_procs(tree[1:], timeout=10)
        self._proc = None
        return [p.pid for p in tree]

    def stop(self) -> None:
        import contextlib
        import signal

        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(10)
        self._proc = None
