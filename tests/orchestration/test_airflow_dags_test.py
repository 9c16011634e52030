"""`airflow dags test` runs the compression DAG from dags/ against a real MLflow server and S3 endpoint,
with the connections given the way a deployment gives them (environment, not DAG code)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from mlflow import MlflowClient

from squeezeflow.report import summary_markdown
from squeezeflow.results import JobResult
from tests.airflow_env import DAG_ID, airflow, task_instances, xcom_value
from tests.reference import library_noise

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@pytest.fixture(scope="module")
def dag_run(single_worker_run: dict[str, Any]) -> dict[str, Any]:
    return single_worker_run


def test_compress_dag_fans_out_one_mapped_task_per_recipe(dag_run: dict[str, Any]) -> None:
    tis = [t for t in task_instances(dag_run["home"], DAG_ID)]
    by_task: dict[str, list[dict[str, Any]]] = {}
    for t in tis:
        by_task.setdefault(t["task_id"], []).append(t)
    for stage in ("optimize", "gate", "benchmark"):
        mapped = sorted(by_task[stage], key=lambda t: t["map_index"])
        assert [t["map_index"] for t in mapped] == [0, 1], stage
        assert [t["rendered_map_index"] for t in mapped] == ["int8-static-u8s8", "int8-dynamic"], stage
        assert {t["state"] for t in mapped} == {"success"}, stage
    for single in (
        "resolve_spec",
        "ingest",
        "baseline",
        "baseline_benchmark",
        "plan",
        "promote",
        "announce_champion",
    ):
        assert [t["state"] for t in by_task[single]] == ["success"], single


def test_compress_dag_promotes_through_the_registry_and_reports(
    dag_run: dict[str, Any], mlflow_server: Any
) -> None:
    result = xcom_value(dag_run["home"], DAG_ID, "promote")
    assert result["promotion"]["promoted"] is True
    assert result["promotion"]["candidate_label"] == "int8-static-u8s8"
    assert result["artifacts"].startswith("s3://"), "artifacts went to the S3 connection's endpoint"
    assert result["report_html"] and result["report_html"].startswith("s3://")
    client = MlflowClient(mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri)
    version = client.get_model_version_by_alias("af-dags-test-model", "champion")
    assert version.version == result["promotion"]["version"]
    assert version.tags["squeezeflow.candidate_key"] == result["promotion"]["candidate_key"]
    assert [a.path for a in client.list_artifacts(result["parent_run_id"], "report")] == [
        "report/report.html"
    ]
    # The tasks' extra links, as the Airflow UI reads them (the XCom under each link's key).
    ui, run = mlflow_server.tracking_uri.rstrip("/"), result["parent_run_id"]
    links = xcom_value(dag_run["home"], DAG_ID, "promote", key="_link_JobReportLink")
    assert links == f"{ui}/#/experiments/{result['experiment_id']}/runs/{run}/artifacts"
    promoted = xcom_value(dag_run["home"], DAG_ID, "promote", key="_link_RegisteredModelLink")
    assert promoted == f"{ui}/#/models/af-dags-test-model/versions/{version.version}"
    assert xcom_value(dag_run["home"], DAG_ID, "ingest", key="_link_MlflowRunLink") == f"{ui}/#/runs/{run}"
    candidate = xcom_value(dag_run["home"], DAG_ID, "gate", key="_link_CandidateRunLink")
    assert candidate.startswith(f"{ui}/#/runs/") and candidate != f"{ui}/#/runs/{run}", candidate
    summary = xcom_value(dag_run["home"], DAG_ID, "promote", key="summary")
    assert "**Promoted int8-static-u8s8 as version" in summary
    assert re.search(r"^\| \[?int8-dynamic\b", summary, re.M), "a row per candidate"
    assert summary == summary_markdown(JobResult.model_validate(result)), "the summary every door shows"


def test_a_promotion_is_announced_on_the_champion_asset(dag_run: dict[str, Any]) -> None:
    """Deploy DAGs are scheduled on ``squeezeflow://champions/<model>/<alias>``; the event names the
    version."""
    import sqlite3

    with sqlite3.connect(dag_run["home"] / "airflow.db") as db:
        rows = db.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE a.uri = ? ORDER BY e.id",
            ("squeezeflow://champions/af-dags-test-model/champion",),
        ).fetchall()
    assert len(rows) == 1, rows
    extra = json.loads(rows[0][0])
    promotion = xcom_value(dag_run["home"], DAG_ID, "promote")["promotion"]
    assert extra["version"] == str(promotion["version"]) and extra["alias"] == "champion"
    assert extra["model_uri"] == f"models:/af-dags-test-model/{promotion['version']}"


def test_no_credentials_in_xcom_logs_or_mlflow(dag_run: dict[str, Any], mlflow_server: Any) -> None:
    from tests.airflow_env import MLFLOW_SECRET

    secrets = [MLFLOW_SECRET, json.loads(dag_run["env"]["AIRFLOW_CONN_AWS_DEFAULT"])["password"]]
    result = xcom_value(dag_run["home"], DAG_ID, "promote")
    client = MlflowClient(mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri)
    runs = client.search_runs([result["experiment_id"]])
    tracked = json.dumps([[r.data.params, r.data.tags] for r in runs])
    logs = "\n".join(
        p.read_text(errors="replace") for p in (dag_run["home"] / "logs").rglob("*") if p.is_file()
    )
    for secret in secrets[:1] + [s for s in secrets[1:] if len(s) >= 8]:  # moto's "testing" is a plain word
        for task in ("resolve_spec", "ingest", "baseline", "promote"):
            assert secret not in json.dumps(xcom_value(dag_run["home"], DAG_ID, task)), task
        assert secret not in dag_run["log"], "the run's output"
        assert secret not in logs, "task logs"
        assert secret not in tracked, "MLflow params and tags"


def test_task_logs_carry_no_library_noise(dag_run: dict[str, Any]) -> None:
    """Airflow logs at INFO: Great Expectations' ~230 "Skipping registering function" lines per ingest,
    its temp-dir line and torch's torchvision warnings used to fill the task logs."""
    noise = library_noise(dag_run["log"])
    assert noise == [], [line for line in dag_run["log"].splitlines() if any(n in line for n in noise)][:10]


def test_a_failed_gate_promotes_nothing_and_still_reports_without_failing_the_run(
    dag_run: dict[str, Any], mlflow_server: Any
) -> None:
    """A zero tolerance from the run's params: no candidate can pass; the run is not a crash, nothing is
    measured that could not be promoted, and promotion still writes the job's result and report."""
    airflow(dag_run["env"], "dags", "test", DAG_ID, "--conf", json.dumps({"max_drop": 0.0}))
    latest = max(t["run_id"] for t in task_instances(dag_run["home"], DAG_ID))
    tis = {
        (t["task_id"], t["map_index"]): t["state"]
        for t in task_instances(dag_run["home"], DAG_ID)
        if t["run_id"] == latest
    }
    assert tis[("gate", 0)] == "success" and tis[("gate", 1)] == "success"
    assert tis[("benchmark", 0)] == "success" and tis[("promote", -1)] == "success"
    result = xcom_value(dag_run["home"], DAG_ID, "promote")  # the latest: this run's
    assert result["promotion"]["promoted"] is False
    verdicts = {r["label"]: r["gate"] for r in result["candidates"]}
    assert verdicts == {"int8-static-u8s8": "fail", "int8-dynamic": "not evaluated: slower"}, verdicts
    assert all(r["p50_ms"] is None for r in result["candidates"] if r["gate"] == "fail"), "measured a failure"
    assert result["report_html"], "the report is written when nothing passed too"
    assert tis[("announce_champion", -1)] == "skipped", "no champion is announced when nothing was promoted"
    client = MlflowClient(mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri)
    assert len(client.search_model_versions("name='af-dags-test-model'")) == 1, "nothing new was registered"
