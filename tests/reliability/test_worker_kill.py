"""A worker killed in the middle of a candidate, and the task retried, as an orchestrator does.

`squeezeflow stage optimize` (what an Airflow mapped task or a Kubeflow component runs) is started as
its own process and SIGKILLed while MLflow is still logging the candidate's model (its LoggedModel
exists but is not finished). What the test proves: the killed attempt recorded no result; the retry
finishes the same candidate in the same MLflow run, with exactly one LoggedModel (the unfinished one
is not left beside it), and records it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus

from squeezeflow.results import CandidateResult
from squeezeflow.spec.search import Recipe
from squeezeflow.stages.optimize import candidate_key
from squeezeflow.store.artifacts import open_store
from tests.reliability.conftest import World, wait_for
from tests.servers import MlflowServer

pytestmark = pytest.mark.integration

SQUEEZEFLOW = str(Path(sys.executable).with_name("squeezeflow"))
RECIPE = {"name": "int8-cal32", "steps": [{"name": "ort_static_int8", "params": {"calibration_samples": 32}}]}


def test_optimize_task_killed_while_logging_its_model_is_retried_without_duplicate_runs_or_models(
    world: World, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    out = tmp_path / "candidate.json"
    argv = [
        SQUEEZEFLOW,
        "stage",
        "optimize",
        "--spec",
        str(world.spec_path),
        "--ingest",
        str(world.write("ingest.json", world.ingest)),
        "--baseline",
        str(world.write("baseline.json", world.baseline)),
        "--recipe",
        str(world.write("recipe.json", RECIPE)),
        "--out",
        str(out),
        "--tracking-uri",
        mlflow_server.tracking_uri,
        "--artifacts",
        world.settings.artifacts,
        "--workdir",
        str(tmp_path / "work"),
    ]
    # Explicit registry: other tests (and Tracker) set the process-wide registry URI elsewhere.
    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri)
    experiment = client.get_experiment_by_name(world.doc["name"])
    assert experiment is not None
    exp = experiment.experiment_id
    key = candidate_key(world.ingest["job_key"], Recipe.model_validate(RECIPE))

    def candidate_runs() -> list[str]:
        return [
            r.info.run_id for r in client.search_runs([exp], f"tags.`squeezeflow.candidate_key` = '{key}'")
        ]

    def logged_models(run_id: str) -> list[str]:
        return [m.model_id for m in client.search_logged_models([exp], f"source_run_id = '{run_id}'")]

    worker = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        run_id = wait_for("the candidate's MLflow run", candidate_runs, 180)[0]
        first_model = wait_for("its LoggedModel", lambda: logged_models(run_id), 180, every_s=0.01)[0]
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    assert client.get_logged_model(first_model).status == LoggedModelStatus.PENDING, (
        "the worker finished logging before the kill: the test did not hit the window it is about"
    )
    store = open_store(world.settings.artifacts)
    assert store.read_record("optimize", key) is None, "a killed attempt recorded a result"
    assert not out.exists()

    retry = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert retry.returncode == 0, retry.stderr[-4000:]
    result = CandidateResult.model_validate(json.loads(out.read_text())["candidate"])
    assert result.status == "ok" and result.run_id == run_id
    assert candidate_runs() == [run_id], "the retry made another candidate run"
    assert logged_models(run_id) == [result.model_id], "the retry left more than one LoggedModel"
    assert client.get_logged_model(result.model_id).status == LoggedModelStatus.READY
    assert client.get_run(run_id).data.tags["squeezeflow.model_id"] == result.model_id
    assert store.read_record("optimize", key) == result.model_dump(mode="json")
