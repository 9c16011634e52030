"""End to end, the way a person uses it: `airflow standalone` (SQLite, a free loopback port) with the
repo's dags/, a run triggered through Airflow's REST API with params as the UI's trigger form sends
them, waited for, and the promoted version checked in the MLflow registry.

The job's target device is remote: `squeezeflow agent`, a separate process standing in for the device,
measures the models; the benchmark tasks defer, and Airflow's triggerer waits for its results."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tests.airflow_env import DAG_ID, airflow_env
from tests.reference import TEST_DEVICE, job_doc, write_spec
from tests.servers import ServerProcess, free_port, log_tail, venv_tool

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

RUN_TIMEOUT_S = 600
EDGE = {
    "name": "edge-device",
    "remote": True,
    "evaluate_on_device": True,
    "intra_op_threads": 1,
    "warmup": 10,
    "iterations": 100,
}
PASSWORD = "squeezeflow-e2e"


class Api:
    def __init__(self, base: str) -> None:
        self.base = base
        self.token = ""

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{method} {path}: {err.code} {err.read()[:2000]!r}") from None

    def login(self, user: str, password: str) -> None:
        self.token = self.call("POST", "/auth/token", {"username": user, "password": password})[
            "access_token"
        ]


@pytest.fixture(scope="module")
def standalone(
    tmp_path_factory: pytest.TempPathFactory,
    mlflow_server: Any,
    preferred_s3_endpoint: Any,
    preferred_s3_bucket: str,
    wide_model: Path,
    animal_mnist: Path,
) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("airflow-standalone")
    doc = job_doc(wide_model, animal_mnist, name="af-standalone")
    doc["devices"] = [TEST_DEVICE, EDGE]
    doc["target_device"] = EDGE["name"]
    spec = write_spec(base / "job.yaml", doc)
    artifacts = f"s3://{preferred_s3_bucket}/standalone"
    port = free_port()
    passwords = base / "passwords.json"
    passwords.write_text(json.dumps({"admin": PASSWORD}))
    env = airflow_env(
        base / "home",
        tracking_uri=mlflow_server.tracking_uri,
        s3=preferred_s3_endpoint,
        artifacts=artifacts,
        spec=spec,
        extra={
            "SQUEEZEFLOW_AGENT_POLL_S": "1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        },
    )
    server = ServerProcess(
        "airflow standalone",
        [venv_tool("airflow"), "standalone"],
        f"http://127.0.0.1:{port}/api/v2/monitor/health",
        base / "standalone.log",
        start_timeout_s=300,
        env=env,
    )
    # The device: its own process and credentials (environment); it sees only the store and MLflow.
    agent_env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    agent_env.update(preferred_s3_endpoint.env())
    argv = [venv_tool("squeezeflow"), "agent", "--profile", EDGE["name"], "--artifacts", artifacts]
    argv += ["--tracking-uri", mlflow_server.tracking_uri, "--workdir", str(base / "agent-work")]
    argv += ["--poll", "1", "-v"]
    agent_log = base / "agent.log"
    with agent_log.open("wb") as fh:
        device = subprocess.Popen(
            argv, env=agent_env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    t0 = time.monotonic()
    server.start()
    try:
        yield {
            "api": Api(f"http://127.0.0.1:{port}"),
            "log": base / "standalone.log",
            "agent_log": agent_log,
            "device": device,
            "started_in": time.monotonic() - t0,
        }
    finally:
        server.stop()
        device.terminate()
        device.wait(30)


def test_a_run_triggered_through_the_rest_api_promotes_a_version(
    standalone: dict[str, Any], mlflow_server: Any
) -> None:
    api: Api = standalone["api"]
    api.login("admin", PASSWORD)
    deadline = time.monotonic() + 300
    while True:  # the DAG processor parses dags/ shortly after start
        try:
            api.call("GET", f"/api/v2/dags/{DAG_ID}")
            break
        except AssertionError:
            assert time.monotonic() < deadline, f"DAG never appeared:\n{log_tail(standalone['log'])}"
            time.sleep(3)
    api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    t0 = time.monotonic()
    run = api.call(
        "POST",
        f"/api/v2/dags/{DAG_ID}/dagRuns",
        {"logical_date": None, "conf": {"max_drop": 0.02, "max_trials": 2}},
    )
    run_id = run["dag_run_id"]
    state = run["state"]
    while state not in ("success", "failed") and time.monotonic() - t0 < RUN_TIMEOUT_S:
        assert standalone["device"].poll() is None, f"the agent stopped:\n{log_tail(standalone['agent_log'])}"
        time.sleep(5)
        state = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
    seconds = time.monotonic() - t0
    print(f"standalone: started in {standalone['started_in']:.0f} s, DAG run took {seconds:.0f} s")
    assert state == "success", (
        f"run ended {state!r} after {seconds:.0f} s:\n{log_tail(standalone['log'], 80)}"
    )

    tis = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]
    optimize = sorted((t["map_index"], t["rendered_map_index"]) for t in tis if t["task_id"] == "optimize")
    assert optimize == [(0, "int8-static-u8s8"), (1, "int8-dynamic")]
    xcom = api.call(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/promote/xcomEntries/return_value"
    )
    result = xcom["value"] if isinstance(xcom["value"], dict) else json.loads(xcom["value"])
    assert result["promotion"]["promoted"] is True
    resolved = api.call(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/resolve_spec/xcomEntries/return_value"
    )
    spec = resolved["value"] if isinstance(resolved["value"], dict) else json.loads(resolved["value"])
    assert spec["tolerance"]["max_drop"] == 0.02, "the trigger form's params reached the job spec"

    client = MlflowClient(mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri)
    version = client.get_model_version_by_alias("af-standalone-model", "champion")
    assert version.version == result["promotion"]["version"]
    assert version.tags["squeezeflow.candidate_key"] == result["promotion"]["candidate_key"]

    # The device's numbers decided it, and the waits ran in the triggerer, not in worker slots.
    assert result["target_profile"] == EDGE["name"]
    promoted = next(r for r in result["candidates"] if r["label"] == result["promotion"]["candidate_label"])
    assert promoted["p50_ms"] < result["baseline_p50_ms"]
    assert "bench.edge-device.p50_ms" in client.get_run(promoted["run_id"]).data.metrics
    assert standalone["agent_log"].read_text().count("measured ") >= 2, "baseline and candidates"
    # The gate waited (deferred) for the device's own held-out answers, and compared them.
    assert standalone["agent_log"].read_text().count("evaluated ") >= 2, "one per candidate"
    assert client.get_run(promoted["run_id"]).data.metrics["gate.device.edge-device"] == 1.0
    # Deferred tasks resume only when their trigger fires, and here only the triggerer runs triggers.
    assert "final_state=deferred" in standalone["log"].read_text(errors="replace"), "slots given back"
