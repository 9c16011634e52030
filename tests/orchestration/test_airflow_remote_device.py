"""A device profile measured by a remote agent: the benchmark tasks submit requests to the artifact
store and defer (the wait runs in a trigger, not a worker slot) until `squeezeflow agent`, a separate
process standing in for the device, has measured the models. Promotion then uses the device's numbers."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tests.airflow_env import DAG_ID, airflow, airflow_env, task_instances, xcom_value
from tests.reference import TEST_DEVICE, job_doc, write_spec
from tests.servers import log_tail, venv_tool

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

EDGE = {"name": "edge-device", "remote": True, "intra_op_threads": 1, "warmup": 10, "iterations": 100}


def test_remote_profile_is_measured_by_the_agent_while_the_task_is_deferred(
    tmp_path: Path,
    mlflow_server: Any,
    preferred_s3_endpoint: Any,
    preferred_s3_bucket: str,
    wide_model: Path,
    animal_mnist: Path,
) -> None:
    artifacts = f"s3://{preferred_s3_bucket}/remote-device"
    doc = job_doc(wide_model, animal_mnist, name="af-remote-device")
    doc["devices"] = [TEST_DEVICE, EDGE]
    doc["target_device"] = "edge-device"
    spec = write_spec(tmp_path / "job.yaml", doc)
    env = airflow_env(
        tmp_path / "home",
        tracking_uri=mlflow_server.tracking_uri,
        s3=preferred_s3_endpoint,
        artifacts=artifacts,
        spec=spec,
        extra={"SQUEEZEFLOW_AGENT_POLL_S": "1"},
    )
    # The device: its own process, its own credentials (environment), only the artifact store and MLflow.
    agent_env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    agent_env.update(preferred_s3_endpoint.env())
    agent_log = tmp_path / "agent.log"
    argv = [venv_tool("squeezeflow"), "agent", "--profile", "edge-device", "--artifacts", artifacts]
    argv += ["--tracking-uri", mlflow_server.tracking_uri, "--workdir", str(tmp_path / "agent-work")]
    argv += ["--poll", "1", "--max-idle", "600", "-v"]
    with agent_log.open("wb") as fh:
        agent = subprocess.Popen(
            argv,
            env=agent_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        airflow(env, "db", "migrate")
        dag_log = tmp_path / "dags-test.log"
        with dag_log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the run
            dag_test = subprocess.Popen(
                [venv_tool("airflow"), "dags", "test", DAG_ID],
                env=env,
                cwd=env["AIRFLOW_HOME"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 900
        while dag_test.poll() is None:
            if agent.poll() is not None or time.monotonic() > deadline:
                dag_test.kill()
                pytest.fail(f"the agent stopped (or the run hung):\n{log_tail(agent_log)}")
            time.sleep(2)
        output = dag_log.read_text(errors="replace")
        assert dag_test.returncode == 0, output[-6000:]
    finally:
        agent.terminate()
        agent.wait(30)
    log = output
    assert "running trigger in line" in log, "the benchmark tasks deferred to a trigger"
    states = {(t["task_id"], t["map_index"]): t["state"] for t in task_instances(tmp_path / "home", DAG_ID)}
    assert states[("baseline_benchmark", -1)] == "success"
    assert states[("promote", -1)] == "success"

    result = xcom_value(tmp_path / "home", DAG_ID, "promote")
    assert result["target_profile"] == "edge-device"
    assert result["promotion"]["promoted"] is True, json.dumps(result["promotion"])
    agent_text = agent_log.read_text()
    assert agent_text.count("measured ") >= 2, (
        f"the agent measured the baseline and candidates:\n{log_tail(agent_log)}"
    )
    edge = next(r for r in result["candidates"] if r["label"] == result["promotion"]["candidate_label"])
    assert edge["p50_ms"] is not None and edge["p50_ms"] < result["baseline_p50_ms"]
    client = MlflowClient(mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri)
    run = client.get_run(edge["run_id"])
    assert "bench.edge-device.p50_ms" in run.data.metrics, (
        "the agent logged its numbers to the candidate's run"
    )
