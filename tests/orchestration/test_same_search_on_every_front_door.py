"""One engine behind every front door: the same spec and seed give the same search through the CLI,
Airflow (`airflow dags test` of the compress DAG) and Kubeflow (`kfp.local` of a pipeline stamped from
the spec).

Each door runs the whole job on its own artifact store, so none can reuse another's records: the wide
ResNet-style CNN on a 600/200/200 subset of Animal-MNIST, round 0 (the int8 variants) and two rounds of
the adaptive search asking two recipes each (the first two are the engine's enqueued first trials, the
next two the seeded sampler's), with the size objective: a promotion decided by bytes, which every door
measures the same, among candidates about 2.5x faster than the baseline (static int8 of this model), a
margin no noise in the latency measurements closes. What the test proves: every door planned the same
recipes in the same rounds, told the study the same objectives for each (validation drop, MACs, bytes),
and promoted the same recipe; the orchestrators fanned each round out over mapped tasks and ParallelFor
iterations.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from squeezeflow.search.rounds import PLAN_STAGE, TRIAL_STAGE, RoundPlan, TrialRecord, plan_key, trial_key
from squeezeflow.store.artifacts import open_store
from tests.airflow_env import DAG_ID, airflow, airflow_env, migrate_db, task_instances, xcom_value
from tests.reference import job_doc, write_spec

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:.*have no effect in the current local runner:UserWarning"),
]

SQUEEZEFLOW = str(Path(sys.executable).with_name("squeezeflow"))
DOORS = ("cli", "airflow", "kfp")
ROUNDS = 3  # round 0 and search.rounds = 2


def search_doc(model: Path, data: Path, door: str) -> dict[str, Any]:
    doc = job_doc(model, data, name=f"same-search-{door}")
    doc["objective"] = "size"
    doc["tolerance"] = {"mode": "absolute", "max_drop": 0.05, "bootstrap_samples": 500}
    doc["search"] = {
        "max_trials": 8,
        "rounds": ROUNDS - 1,
        "parallel_trials": 2,
        "max_seconds": 3600,
        "seed": 7,
        "space": {
            "prune_ratio": [0.4, 0.7],
            "distill": [False],  # what is compared is the search, not what distillation buys
            "quantize": ["int8"],
            "finetune_epochs": 1,
            "max_recovery_scale": 1,
        },
    }
    return doc


def _run_cli(spec: Path, base: Path, tracking_uri: str, out_name: str = "result.json") -> dict[str, Any]:
    out = base / out_name
    proc = subprocess.run(
        [SQUEEZEFLOW, "run", str(spec), "--no-progress", "--tracking-uri", tracking_uri,
         "--artifacts", str(base / "artifacts"), "--workdir", str(base / "work"), "--result", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr[-4000:]
    return dict(json.loads(out.read_text()))


def _run_airflow(spec: Path, base: Path, tracking_uri: str) -> dict[str, Any]:
    env = airflow_env(
        base / "home", tracking_uri=tracking_uri, s3=None, artifacts=str(base / "artifacts"), spec=spec
    )
    migrate_db(env)
    airflow(env, "dags", "test", DAG_ID, timeout=900)
    tis = task_instances(base / "home", DAG_ID)
    result = xcom_value(base / "home", DAG_ID, "promote")
    assert result is not None, "the promote task returned nothing"
    return {**result, "_tis": tis}


def _run_kfp(spec: Path, base: Path, tracking_uri: str) -> dict[str, Any]:
    """kfp.local in a process of its own (its runner's settings are process-wide), with the environment
    the pipeline's Kubernetes secret gives a pod."""
    script = f"""
import json, sys
from pathlib import Path
from kfp import components, local
from squeezeflow.kfp.pipelines import stamp
out = stamp(Path({str(spec)!r}), Path({str(base / "pipeline.yaml")!r}))
local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root={str(base / "kfp-root")!r})
components.load_component_from_file(str(out))()
"""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "SQUEEZEFLOW_ARTIFACTS": str(base / "artifacts"),
        "SQUEEZEFLOW_HOME": str(base / "home"),
        "SQUEEZEFLOW_WORKDIR": str(base / "work"),
    }
    env.pop("SQUEEZEFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=900, env=env, cwd=base
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    (promote_dir,) = [
        p for p in (base / "kfp-root").glob("*/promote*") if (p / "executor_output.json").is_file()
    ]
    value = json.loads((promote_dir / "executor_output.json").read_text())["parameterValues"]["result"]
    return {**json.loads(value), "_kfp_root": base / "kfp-root"}


RUNNERS = {"cli": _run_cli, "airflow": _run_airflow, "kfp": _run_kfp}


@pytest.fixture(scope="module")
def doors(
    tmp_path_factory: pytest.TempPathFactory, mlflow_server: Any, wide_model: Path, small_data: Path
) -> Iterator[dict[str, dict[str, Any]]]:
    """The three doors, one after another (side by side they take as long on two cores)."""
    results: dict[str, dict[str, Any]] = {}
    for door in DOORS:
        base = tmp_path_factory.mktemp(f"door-{door}")
        spec = write_spec(base / "job.yaml", search_doc(wide_model, small_data, door))
        t0 = time.monotonic()
        out = RUNNERS[door](spec, base, mlflow_server.tracking_uri)
        results[door] = {
            **out,
            "_base": base,
            "_spec": spec,
            "_tracking_uri": mlflow_server.tracking_uri,
            "_seconds": time.monotonic() - t0,
        }
    yield results


def _search(result: dict[str, Any]) -> list[list[tuple[str, list[float] | None]]]:
    """Per round, the planned recipes (by name and content key) as the door's store recorded them, each with
    what the study was told of it (validation drop, MACs, bytes: properties of the built model)."""
    store = open_store(str(result["_base"] / "artifacts"))
    job_key = result["job_key"]
    rounds = []
    for index in range(ROUNDS):
        recorded = store.read_record(PLAN_STAGE, plan_key(job_key, index))
        assert recorded is not None, f"round {index} was never planned"
        plan = RoundPlan.model_validate(recorded)
        row = []
        for recipe in plan.recipes:
            trial = store.read_record(TRIAL_STAGE, trial_key(job_key, recipe))
            assert trial is not None, f"{recipe.label} was planned but never recorded"
            row.append((f"{recipe.label}:{recipe.key()[:12]}", TrialRecord.model_validate(trial).objectives))
        rounds.append(row)
    return rounds


def test_same_search_on_every_front_door(doors: dict[str, dict[str, Any]]) -> None:
    searches = {door: _search(result) for door, result in doors.items()}
    cli = searches["cli"]
    assert [len(r) for r in cli] == [4, 2, 2], cli
    assert all(label.startswith("prune") for label, _ in cli[1] + cli[2]), "rounds 1 and 2 search pruning"
    assert all(told is not None for row in cli for _, told in row), "every candidate was built and told"
    for door in ("airflow", "kfp"):
        assert searches[door] == cli, f"{door} searched differently from the CLI"
    promoted = {
        door: (r["promotion"]["promoted"], r["promotion"].get("candidate_label")) for door, r in doors.items()
    }
    assert promoted["cli"][0], doors["cli"]["promotion"]["reason"]
    assert promoted["airflow"] == promoted["kfp"] == promoted["cli"], promoted
    print({door: round(r["_seconds"]) for door, r in doors.items()})


def test_the_orchestrators_fan_each_round_out(doors: dict[str, dict[str, Any]]) -> None:
    from squeezeflow.airflow.factory import round_task_id

    tis = doors["airflow"]["_tis"]
    for index, expected in enumerate([4, 2, 2]):
        optimize = [t for t in tis if t["task_id"] == round_task_id("optimize", index)]
        assert sorted(t["map_index"] for t in optimize) == list(range(expected)), index
        assert {t["state"] for t in optimize} == {"success"}
    root = doors["kfp"]["_kfp_root"]
    for index, expected in enumerate([4, 2, 2], start=1):
        iterations = sorted(root.glob(f"*/for-loop-{index}-iteration-*/trial*"))
        assert len(iterations) == expected, (index, iterations)


def test_the_cli_tracks_every_trial_and_a_rerun_replays_the_search(doors: dict[str, dict[str, Any]]) -> None:
    """The in-process door: int8 first, then pruned candidates; every trial a nested MLflow run with what
    its passes reported; promotion takes the best eligible candidate by the objective; running the job
    again replays the recorded search (no new run, the same candidates and promotion)."""
    import mlflow

    result = doors["cli"]
    labels = [r["label"] for r in result["candidates"]]
    assert labels[:4] == [
        "int8-static-u8s8",
        "int8-static-u8s8-percentile",
        "int8-static-s8s8",
        "int8-dynamic",
    ]
    pruned = [r for r in result["candidates"] if r["label"].startswith("prune")]
    assert len(pruned) == 4 and all(r["status"] == "ok" for r in pruned)
    assert all(r["size_bytes"] < result["baseline_size_bytes"] / 3 for r in pruned)
    eligible = [r for r in result["candidates"] if r["eligible"]]
    assert eligible and result["promotion"]["promoted"]
    best = min(eligible, key=lambda r: (r["size_bytes"], r["p50_ms"]))
    assert result["promotion"]["candidate_key"] == best["candidate_key"]
    assert result["search_rounds"] == ROUNDS and result["search_stop"]

    client = mlflow.MlflowClient(tracking_uri=result["_tracking_uri"])
    nested = client.search_runs(
        [result["experiment_id"]], f"tags.`mlflow.parentRunId` = '{result['parent_run_id']}'"
    )
    assert len(nested) == len(labels) == 8
    pruned_run = next(r for r in nested if r.info.run_name == pruned[0]["label"])
    assert pruned_run.data.metrics["prune.macs_after"] < pruned_run.data.metrics["prune.macs_before"]
    assert "finetune.val_accuracy_after" in pruned_run.data.metrics

    runs_before = len(client.search_runs([result["experiment_id"]]))
    again = _run_cli(result["_spec"], result["_base"], result["_tracking_uri"], out_name="again.json")
    assert [r["candidate_key"] for r in again["candidates"]] == [
        r["candidate_key"] for r in result["candidates"]
    ]
    assert len(client.search_runs([result["experiment_id"]])) == runs_before
    # Beside the result the CLI wrote, the report under a stable name: the last run's stored report.
    stable = Path(result["_base"]) / "report.html"
    stored = Path(again["report_html"])
    assert stable.read_bytes() == stored.read_bytes() and "<html" in stable.read_text()[:500].lower()
    assert again["promotion"]["candidate_key"] == result["promotion"]["candidate_key"]
