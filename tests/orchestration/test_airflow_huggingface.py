"""A Hugging Face directory job through ``airflow dags test``: a small BertForSequenceClassification
folder on raw-text reviews (tokenized at ingest), one quick int8 recipe, tracked on the session's MLflow
server; the DAG's tasks run the same stages as every door, and the promoted version answers raw text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers", reason="needs the hf extra: pip install -e '.[hf]'")

from tests.airflow_env import DAG_ID, airflow, airflow_env, migrate_db, task_instances, xcom_value
from tests.huggingface_checkpoints import huggingface_job
from tests.reference import write_spec

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_huggingface_directory_job_runs_through_airflow_dags_test(tmp_path: Path, mlflow_server: Any) -> None:
    spec = write_spec(tmp_path / "job.yaml", huggingface_job(tmp_path, "af-hf"))
    env = airflow_env(
        tmp_path / "home",
        tracking_uri=mlflow_server.tracking_uri,
        s3=None,
        artifacts=str(tmp_path / "artifacts"),
        spec=spec,
    )
    migrate_db(env)

    airflow(env, "dags", "test", DAG_ID)

    states = {(t["task_id"], t["map_index"]): t["state"] for t in task_instances(tmp_path / "home", DAG_ID)}
    for task in ("ingest", "baseline", "optimize", "gate", "benchmark", "promote"):
        assert {s for (t, _), s in states.items() if t == task} == {"success"}, (task, states)
    ingested = xcom_value(tmp_path / "home", DAG_ID, "ingest")
    assert json.dumps(ingested).count('"max_length": 64') == 1, "ingest tokenized the raw text"
    result = xcom_value(tmp_path / "home", DAG_ID, "promote")
    (row,) = result["candidates"]
    assert row["label"] == "trim-int8" and row["status"] == "ok" and row["gate"] == "pass", row
    assert result["promotion"]["promoted"] is True, result["promotion"]

    import mlflow

    mlflow.set_tracking_uri(mlflow_server.tracking_uri)
    mlflow.set_registry_uri(mlflow_server.tracking_uri)  # an in-process job earlier may have set another
    answer = mlflow.pyfunc.load_model("models:/af-hf-model@champion").predict(["a warm, funny film"])
    assert answer["label"].iloc[0] in ("negative", "positive")
