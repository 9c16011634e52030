"""The Airflow provider without a running Airflow: its registration, connections, params, DAG factory,
the repo's DAG folder (a DagBag import test) and the deferrable trigger."""

from __future__ import annotations

import asyncio
import json
import warnings
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml

from squeezeflow import tasks
from squeezeflow.errors import SpecError
from tests.reference import job_doc

REPO = Path(__file__).resolve().parents[2]


def _import(path: str) -> Any:
    module, _, attr = path.rpartition(".")
    return getattr(import_module(module), attr)


def test_provider_is_registered_through_its_entry_point_and_every_class_imports() -> None:
    (ep,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("squeezeflow")]
    info = ep.load()()
    assert info["package-name"] == "squeezeflow"
    (conn,) = info["connection-types"]
    assert conn["connection-type"] == "mlflow"
    hook = _import(conn["hook-class-name"])
    assert hook.conn_type == "mlflow" and hook.default_conn_name == "squeezeflow_mlflow"
    for link in info["extra-links"]:
        assert _import(link).name
    for group in ("hooks", "operators", "triggers"):
        for entry in info[group]:
            for module in entry["python-modules"]:
                import_module(module)


def test_the_airflow_ui_sees_the_mlflow_links_each_operator_declares_and_the_provider_lists_them() -> None:
    """The UI builds a task's extra links from the serialized DAG: each link's name and the XCom key the
    worker stores its URL under."""
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    from squeezeflow.airflow import operators as ops
    from squeezeflow.airflow.provider import get_provider_info

    stage = {"spec": {}, "ingest": {}, "baseline": {}}
    with DAG("links") as dag:
        ops.SqueezeflowBaselineOperator(task_id="baseline", spec={}, ingest={})
        ops.SqueezeflowOptimizeOperator.partial(task_id="optimize", **stage).expand(recipe=[{}, {}])
        ops.SqueezeflowGateOperator(task_id="gate", outcome={}, **stage)
        ops.SqueezeflowPromoteOperator(task_id="promote", baseline_benchmarks={}, **stage)
        ops.SqueezeflowRetrainOperator(task_id="retrain", spec={}, entrypoint="m:f")
    seen = DagSerialization.from_dict(DagSerialization.to_dict(dag))

    def links(task_id: str) -> dict[str, str]:
        return {n: link.xcom_key for n, link in seen.get_task(task_id).operator_extra_link_dict.items()}

    assert links("baseline") == {"MLflow run": "_link_MlflowRunLink"}
    candidate = {"MLflow run": "_link_MlflowRunLink", "MLflow candidate run": "_link_CandidateRunLink"}
    assert links("optimize") == candidate and links("gate") == candidate
    assert links("promote") == {
        "MLflow run": "_link_MlflowRunLink",
        "Registered model": "_link_RegisteredModelLink",
        "Job report": "_link_JobReportLink",
    }
    assert links("retrain") == {}, "a retrain belongs to no job run"
    declared = {
        f"{type(link).__module__}.{type(link).__name__}"
        for op in vars(ops).values()
        if isinstance(op, type) and issubclass(op, ops.BaseOperator)
        for link in op.operator_extra_links
    }
    assert declared == set(get_provider_info()["extra-links"])


@pytest.mark.parametrize(
    ("tracking_uri", "run_url"),
    [
        ("http://mlflow.svc:5000", "http://mlflow.svc:5000/#/runs/r1"),
        ("https://mlflow.example.com/", "https://mlflow.example.com/#/runs/r1"),
        ("HTTPS://ml.example.com/mlflow/", "https://ml.example.com/mlflow/#/runs/r1"),
        ("https://alice:s3cret@ml.example.com/?token=abc#x", "https://ml.example.com/#/runs/r1"),
        ("http://[::1]:5000", "http://[::1]:5000/#/runs/r1"),
        ("sqlite:////tmp/mlflow.db", None),
        ("file:///tmp/mlruns", None),
        ("databricks", None),
        ("http://", None),
        ("http://host:notaport", None),
    ],
)
def test_mlflow_ui_links_come_from_an_http_tracking_uri_without_its_credentials(
    tracking_uri: str, run_url: str | None
) -> None:
    from squeezeflow.airflow.operators import mlflow_model_version_url, mlflow_run_url

    assert mlflow_run_url(tracking_uri, "r1") == run_url
    version = mlflow_model_version_url(tracking_uri, "animal mnist/int8", "3")
    if run_url is None:
        assert version is None
    else:
        assert version == run_url.replace("runs/r1", "models/animal%20mnist%2Fint8/versions/3")
    assert mlflow_run_url("https://m.example", "r1", "7") == "https://m.example/#/experiments/7/runs/r1"


@pytest.mark.parametrize(
    ("conn", "uri"),
    [
        ({"conn_type": "mlflow", "host": "https://mlflow.example.com/"}, "https://mlflow.example.com"),
        ({"conn_type": "mlflow", "host": "mlflow.svc", "port": 5000}, "http://mlflow.svc:5000"),
        (
            {
                "conn_type": "mlflow",
                "host": "mlflow.svc",
                "port": 443,
                "extra": {"scheme": "https", "path": "ml"},
            },
            "https://mlflow.svc:443/ml",
        ),
    ],
)
def test_mlflow_connection_gives_the_tracking_uri(
    conn: dict[str, Any], uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from squeezeflow.airflow.hooks import MlflowHook

    monkeypatch.setenv("AIRFLOW_CONN_TEST_MLFLOW", json.dumps(conn))
    assert MlflowHook("test_mlflow").tracking_uri() == uri


def test_mlflow_credentials_go_to_the_environment_only_for_the_stage_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from squeezeflow.airflow.hooks import stage_settings

    monkeypatch.setenv(
        "AIRFLOW_CONN_TEST_MLFLOW",
        json.dumps({"conn_type": "mlflow", "host": "http://m:5000", "login": "u", "password": "s3cret"}),
    )
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with stage_settings("test_mlflow", None, artifacts="/tmp/x", workdir="/tmp/w") as settings:
        import os

        assert settings.tracking_uri == "http://m:5000"
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret"
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ


def test_run_params_become_spec_overrides_and_bad_values_name_the_field(tmp_path: Path) -> None:
    from squeezeflow.airflow.operators import params_to_overrides

    over = params_to_overrides(
        {"max_drop": 0.02, "model_uri": "s3://b/m.pt", "devices": None, "target_device": ""}
    )
    assert over == {"tolerance": {"max_drop": 0.02}, "model": {"uri": "s3://b/m.pt"}}
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(job_doc("m.pt", tmp_path)))
    assert tasks.resolve_spec(spec, over)["tolerance"]["max_drop"] == 0.02
    with pytest.raises(SpecError, match=r"tolerance\.max_drop"):
        tasks.resolve_spec(spec, params_to_overrides({"max_drop": 2}))


def test_factory_makes_one_dag_per_good_spec_and_warns_about_a_bad_one(tmp_path: Path) -> None:
    from squeezeflow.airflow.factory import SpecImportWarning, dags_from_folder

    (tmp_path / "a.yaml").write_text(yaml.safe_dump(job_doc("a.pt", tmp_path, name="model-a")))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(job_doc("b.pt", tmp_path, name="model-b")))
    bad = job_doc("c.pt", tmp_path, name="model-c")
    bad["tolerance"]["max_drop"] = -1
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(bad))
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(job_doc("d.pt", tmp_path, name="model-a")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dags = dags_from_folder(tmp_path)
    assert sorted(dags) == ["squeezeflow_compress_model_a", "squeezeflow_compress_model_b"]
    messages = [str(w.message) for w in caught if issubclass(w.category, SpecImportWarning)]
    assert any(m.startswith("c.yaml") and "tolerance.max_drop" in m for m in messages), messages
    assert any(m.startswith("d.yaml") and "used by another spec" in m for m in messages), messages


def test_the_dags_folder_imports_without_errors() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    assert {"squeezeflow_compress_on_new_model", "squeezeflow_retrain_and_compress"} <= set(bag.dag_ids)
    compress = bag.dags.get("squeezeflow_compress_on_new_model")
    assert compress is not None
    from squeezeflow.airflow.factory import round_task_id
    from squeezeflow.search.rounds import rounds_of
    from squeezeflow.spec.load import load_spec

    job = load_spec(REPO / "dags" / "jobs" / "animal_mnist.yaml")
    rounds = rounds_of(job)
    assert rounds > 1, "the shipped job searches: its DAG is unrolled to the search's rounds"
    mapped = {t.task_id for t in compress.tasks if t.is_mapped}  # type: ignore[attr-defined]
    stages = ("optimize", "gate", "benchmark")
    assert mapped == {round_task_id(s, k) for s in stages for k in range(rounds)}
    caps = {compress.get_task(t).max_active_tis_per_dagrun for t in mapped}
    assert caps == {job.search.parallel_trials}, "the scheduler runs parallel_trials of a stage at a time"
    assert {round_task_id("plan", k) for k in range(rounds)} <= set(compress.task_ids)
    assert type(compress.timetable).__name__ == "AssetTriggeredTimetable"
    assert {"model_uri", "max_drop", "tolerance_mode", "devices", "target_device"} <= set(compress.params)
    retrain = bag.dags.get("squeezeflow_retrain_and_compress")
    assert retrain is not None
    assert "retrain" in retrain.get_task("resolve_spec").upstream_task_ids
    assert [o.uri for o in retrain.get_task("retrain").outlets] == [
        "squeezeflow://baselines/animal-mnist-wide-resnet"
    ]


def test_store_record_trigger_fires_when_the_record_appears_and_times_out_otherwise(tmp_path: Path) -> None:
    from squeezeflow.airflow.triggers import StoreRecordTrigger
    from squeezeflow.store.artifacts import open_store

    store = open_store(tmp_path / "store")
    trigger = StoreRecordTrigger(
        str(tmp_path / "store"), "benchmark", ["k1"], poll_interval_s=0.05, timeout_s=30
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "squeezeflow.airflow.triggers.StoreRecordTrigger"
    revived = StoreRecordTrigger(**kwargs)

    async def first_event(t: StoreRecordTrigger, after: float = 0.0) -> Any:
        async def write_later() -> None:
            await asyncio.sleep(after)
            store.write_record("benchmark", "k1", {"p50_ms": 1.0})

        if after:
            task = asyncio.create_task(write_later())
        async for event in t.run():
            if after:
                await task
            return event.payload

    assert asyncio.run(first_event(revived, after=0.2)) == {"status": "done", "keys": ["k1"]}
    late = StoreRecordTrigger(
        str(tmp_path / "store"), "benchmark", ["k2"], poll_interval_s=0.05, timeout_s=0.1
    )
    assert asyncio.run(first_event(late))["status"] == "timeout"


def test_pod_mode_runs_every_stage_in_the_project_image_with_settings_from_a_secret(
    tmp_path: Path, animal_mnist: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk import DAG

    from squeezeflow.airflow.factory import add_compress_tasks
    from squeezeflow.airflow.pods import PodSettings, ingest_in_pod, plan_in_pod, resolve_spec_in_pod

    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(job_doc(tiny_model, animal_mnist, name="pod-mode")))
    pods = PodSettings(image="registry.example/squeezeflow:1", benchmark_node_selector={"bench": "true"})
    dag = DAG("pod_mode")
    add_compress_tasks(dag, str(spec), pods=pods)
    kpo = {t.task_id: t for t in dag.tasks}
    assert set(kpo) == {"resolve_spec", "ingest", "baseline", "baseline_benchmark", "plan"} | {
        "optimize",
        "gate",
        "benchmark",
        "promote",
    }
    for t in kpo.values():
        op = t if not t.is_mapped else None  # type: ignore[attr-defined]
        partial = getattr(t, "partial_kwargs", {}) if op is None else vars(op)
        image = partial.get("image") if op is None else op.image  # type: ignore[attr-defined]
        assert image == "registry.example/squeezeflow:1", t.task_id
        env_from = partial.get("env_from") if op is None else op.env_from  # type: ignore[attr-defined]
        assert env_from[0].secret_ref.name == "squeezeflow-env", t.task_id
    assert issubclass(kpo["ingest"].__class__, KubernetesPodOperator)
    assert kpo["benchmark"].partial_kwargs["node_selector"] == {"bench": "true"}  # type: ignore[attr-defined]
    for stage in ("optimize", "gate", "benchmark"):
        assert kpo[stage].partial_kwargs["max_active_tis_per_dagrun"] == 2, stage  # type: ignore[attr-defined]
    assert {t.task_id for t in dag.tasks if t.is_mapped} == {"optimize", "gate", "benchmark"}  # type: ignore[attr-defined]

    # What a pod runs, run here with the environment the secret would give it.
    monkeypatch.setenv("SQUEEZEFLOW_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("SQUEEZEFLOW_WORKDIR", str(tmp_path / "work"))
    doc = resolve_spec_in_pod(str(spec))
    ing = ingest_in_pod(doc)
    assert ing["validation"]["success"] is True
    assert [r["name"] for r in plan_in_pod(doc, ing, 0)] == ["int8-static-u8s8", "int8-dynamic"]


def test_a_failed_stage_is_retried_later_each_time(tmp_path: Path) -> None:
    """The retry delays grow (Airflow's own next-retry computation) and stay bounded."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from airflow.models.taskinstance import TaskInstance

    from squeezeflow.airflow.factory import compress_dag

    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(job_doc("m.pt", tmp_path, name="retries")))
    dag = compress_dag(spec)
    ti = TaskInstance(task=dag.get_task("ingest"), run_id="r", dag_version_id=uuid.uuid4())
    ti.end_date = datetime(2026, 1, 1, tzinfo=UTC)
    delays = []
    for try_number in (1, 2, 3):
        ti.try_number = try_number
        delays.append(ti.next_retry_datetime() - ti.end_date)
    assert delays[0] >= timedelta(seconds=30)
    assert delays[0] < delays[1] < delays[2] <= timedelta(minutes=10), delays
    ti.try_number = 30
    assert ti.next_retry_datetime() - ti.end_date == timedelta(minutes=10)


def test_pod_mode_resolves_the_spec_with_the_run_form_and_the_announced_model_like_in_process(
    tmp_path: Path,
) -> None:
    """A run triggered with params (and by an asset event announcing a model) gets the same spec in pod
    mode as in process: the pod's arguments, rendered as Airflow renders them when the task runs, carry
    the run form and the event's model."""
    from datetime import UTC, datetime

    from airflow.sdk import Asset
    from airflow.sdk.definitions.param import process_params
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    from squeezeflow.airflow.factory import compress_dag
    from squeezeflow.airflow.operators import SqueezeflowResolveSpecOperator
    from squeezeflow.airflow.pods import PodSettings, resolve_spec_in_pod

    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(job_doc("m.pt", tmp_path, name="pod-form")))
    dag = compress_dag(spec, pods=PodSettings())
    task = dag.get_task("resolve_spec")
    params = process_params(
        dag, task, {"max_drop": 0.03, "data_uri": str(tmp_path / "other-data")}, suppress_exception=False
    )
    announced = Asset("squeezeflow://baselines/pod-form")
    event = AssetEventDagRunReferenceResult(
        asset={"name": announced.name, "uri": announced.uri, "extra": {}},
        extra={"model_uri": str(tmp_path / "new.pt")},
        source_task_id=None,
        source_dag_id=None,
        source_run_id=None,
        source_map_index=None,
        source_aliases=[],
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
    )
    context: Any = {"params": params, "triggering_asset_events": TriggeringAssetEventsAccessor.build([event])}
    task.render_template_fields(context)
    in_pod = resolve_spec_in_pod(*task.op_args, **task.op_kwargs)  # type: ignore[attr-defined]
    assert in_pod["tolerance"]["max_drop"] == 0.03
    assert in_pod["data"]["uri"] == str(tmp_path / "other-data")
    assert in_pod["model"]["uri"] == str(tmp_path / "new.pt")
    in_process = SqueezeflowResolveSpecOperator(
        task_id="resolve_spec", spec_source=str(spec), aws_conn_id=None
    ).execute(context)
    assert in_pod == in_process

    # Triggered by hand with the form as it stands: the spec's own values.
    untouched = compress_dag(spec, pods=PodSettings()).get_task("resolve_spec")  # not rendered yet
    plain: Any = {"params": process_params(dag, untouched, {}, suppress_exception=False)}
    untouched.render_template_fields(plain)
    assert resolve_spec_in_pod(*untouched.op_args) == tasks.resolve_spec(spec)  # type: ignore[attr-defined]


def test_the_retrain_dag_parses_without_its_spec_and_each_run_retrains_on_the_spec_as_it_is_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.definitions.param import process_params

    dag_file = REPO / "dags" / "squeezeflow_retrain_and_compress.py"
    spec = tmp_path / "job.yaml"
    monkeypatch.setenv("SQUEEZEFLOW_SPEC", str(spec))

    missing = DagBag(dag_folder=str(dag_file))
    assert missing.import_errors == {}, "a missing spec breaks no DAG file"
    (warning,) = missing.captured_warnings[str(dag_file)]
    assert "cannot read the job spec" in warning and str(spec) in warning
    assert "read_spec" in missing.dags["squeezeflow_retrain_and_compress"].task_ids

    spec.write_text(yaml.safe_dump(job_doc("m.pt", tmp_path, name="weekly")))
    dag = DagBag(dag_folder=str(dag_file)).dags["squeezeflow_retrain_and_compress"]
    edited = job_doc("m.pt", tmp_path, name="weekly")
    edited["data"]["uri"] = str(tmp_path / "newer-data")
    spec.write_text(yaml.safe_dump(edited))  # after the DAG was parsed
    read, retrain = dag.get_task("read_spec"), dag.get_task("retrain")
    assert retrain.upstream_task_ids == {"read_spec"}
    assert retrain.spec.operator is read  # type: ignore[attr-defined]  # the retrain trains on read_spec's output
    # A scheduled run's params: the form's defaults, from the DAG file as the worker parses it to run a task.
    reparsed = DagBag(dag_folder=str(dag_file)).dags["squeezeflow_retrain_and_compress"]
    params = process_params(reparsed, reparsed.get_task("read_spec"), {}, suppress_exception=False)
    context: Any = {"params": params}
    assert read.execute(context)["data"]["uri"] == str(tmp_path / "newer-data")
