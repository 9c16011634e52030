"""The scheduled retrain-and-compress DAG: the user's training entry point runs, its model is stored and
announced on the job's baseline asset, and the compression runs on that model, not the spec's."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.airflow_env import airflow, airflow_env, migrate_db, task_instances, xcom_value
from tests.reference import job_doc, write_spec

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DAG = "squeezeflow_retrain_and_compress"


def test_retrain_stores_and_announces_a_new_model_and_compresses_it(
    tmp_path: Path, mlflow_server: Any, tiny_model: Path, animal_mnist: Path
) -> None:
    doc = job_doc(tiny_model, animal_mnist, name="af-retrain")
    # one candidate is enough here: static int8 (dynamic int8, judged at batch 1 as it runs, loses 0.7
    # points on the tiny CNN trained for one epoch, and the gate cannot show it within one point)
    doc["search"]["recipes"] = doc["search"]["recipes"][:1]
    spec = write_spec(tmp_path / "job.yaml", doc)
    env = airflow_env(
        tmp_path / "home",
        tracking_uri=mlflow_server.tracking_uri,
        s3=None,
        artifacts=str(tmp_path / "artifacts"),
        spec=spec,
        extra={"SQUEEZEFLOW_TRAIN_KWARGS": json.dumps({"model": "tiny_cnn", "epochs": 1})},
    )
    migrate_db(env)
    airflow(env, "dags", "test", DAG)

    states = {
        t["task_id"]: t["state"] for t in task_instances(tmp_path / "home", DAG) if t["map_index"] == -1
    }
    assert states["retrain"] == "success" and states["promote"] == "success"
    new_model = xcom_value(tmp_path / "home", DAG, "retrain")
    assert new_model.startswith(str(tmp_path / "artifacts")) and new_model.endswith(".pt")
    resolved = xcom_value(tmp_path / "home", DAG, "resolve_spec")
    assert resolved["model"]["uri"] == new_model, "the compression ran on the retrained model"
    with sqlite3.connect(tmp_path / "home" / "airflow.db") as db:
        events = db.execute(
            "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id ORDER BY e.id"
        ).fetchall()
    announced = [(uri, json.loads(extra)["model_uri"]) for uri, extra in events]
    assert announced[0] == ("squeezeflow://baselines/af-retrain", new_model)
    # Whether the one int8 candidate is promoted depends on a latency measurement on a shared machine;
    # the champion asset hears of it exactly when it is, with the version promoted.
    promotion = xcom_value(tmp_path / "home", DAG, "promote")["promotion"]
    champion = (
        [(f"squeezeflow://champions/{doc['registry']['model_name']}/{doc['registry']['alias']}",
          f"models:/{promotion['model_name']}/{promotion['version']}")]
        if promotion["promoted"]
        else []
    )  # fmt: skip
    assert announced[1:] == champion
