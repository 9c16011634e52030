"""Two identical jobs started at the same instant, and what a successful job prints.

Two `squeezeflow run` processes on the same spec, the same MLflow server and the same artifact store
(each with its own scratch directory, as on two machines) start together on a job nothing has been
recorded for, so every stage runs. Their tracking URI carries a password.

What the tests prove: both finish cleanly (exit 0) with the same result: one runs the job and the other
waits for it (it says so) and then reuses what it recorded; MLflow holds one job run, one run per
candidate, exactly one finished LoggedModel per run and one model version, and the job run is
FINISHED; and neither job printed the password (MLflow prints "View run ... at: <tracking URI>" when a
run ends), in stdout, stderr or its result JSON. The last test takes the lease of a job whose holder
runs on another machine and went silent, in process: it is taken over only once its heartbeat is stale.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import LoggedModelStatus, ViewType

from squeezeflow.tracking.lease import JobLease
from squeezeflow.tracking.tracker import Tracker
from tests.reliability.cli_jobs import CliJob, new_job
from tests.servers import MlflowServer

pytestmark = pytest.mark.integration


@dataclass
class Twins:
    job: CliJob
    codes: list[int]
    outputs: list[tuple[str, str]]
    results: list[dict[str, Any]]


@pytest.fixture(scope="module")
def twins(
    tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer, wide_onnx: Path, small_data: Path
) -> Iterator[Twins]:
    job = new_job(tmp_path_factory.mktemp("twins"), mlflow_server, wide_onnx, small_data, "twins")
    procs = [job.start(f"work-{i}", f"result-{i}.json") for i in range(2)]
    try:
        codes = [p.wait(timeout=400) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=30)
    results = [
        json.loads(path.read_text()) if (path := job.dir / f"result-{i}.json").exists() else {}
        for i in range(2)
    ]
    yield Twins(job, codes, [job.output(f"result-{i}.json") for i in range(2)], results)


def test_two_identical_jobs_started_at_once_both_finish_with_one_set_of_runs_models_and_versions(
    twins: Twins,
) -> None:
    assert twins.codes == [0, 0], [err[-3000:] for _, err in twins.outputs]
    first, second = twins.results
    assert first["parent_run_id"] == second["parent_run_id"]
    assert [r["promotion"]["version"] for r in twins.results] == ["1", "1"]
    assert all(r["promotion"]["promoted"] for r in twins.results)
    assert any("is running this job" in " ".join(err.split()) for _, err in twins.outputs), (
        "neither job waited for the other"
    )

    client, exp = twins.job.client(), twins.job.experiment_id()
    runs = client.search_runs([exp])
    jobs = [r for r in runs if r.data.tags.get("squeezeflow.kind") == "job"]
    assert [r.info.run_id for r in jobs] == [first["parent_run_id"]]
    assert jobs[0].info.status == "FINISHED"
    every_candidate = [
        r.info.run_name
        for r in client.search_runs([exp], run_view_type=ViewType.ALL)
        if r.data.tags.get("squeezeflow.kind") == "candidate"
    ]
    assert sorted(every_candidate) == ["int8-cal128", "int8-cal64"], "duplicate candidate runs"
    assert len(client.search_logged_models([exp])) == len(runs) == 3
    for run in runs:
        models = client.search_logged_models([exp], f"source_run_id = '{run.info.run_id}'")
        assert [m.status for m in models] == [LoggedModelStatus.READY], run.info.run_name
    versions = client.search_model_versions(f"name = '{twins.job.model_name}'")
    assert [str(v.version) for v in versions] == ["1"]
    assert str(client.get_model_version_by_alias(twins.job.model_name, "champion").version) == "1"


def test_a_successful_job_never_prints_the_password_of_its_tracking_uri(twins: Twins) -> None:
    where = {
        f"job {i} {what}": text
        for i, pair in enumerate(twins.outputs)
        for what, text in zip(("stdout", "stderr"), pair, strict=True)
    }
    where.update({f"job {i} result JSON": json.dumps(r) for i, r in enumerate(twins.results)})
    assert any("Promoted" in text for text in where.values()), "no job summary was scanned"
    assert [place for place, text in where.items() if twins.job.password in text] == []
    assert "sqf-user:***@" in twins.outputs[0][0], "the summary should show the redacted tracking URI"


def test_a_job_lease_held_by_a_silent_process_on_another_machine_is_taken_over_once_stale(
    mlflow_server: MlflowServer,
) -> None:
    """The cross-machine case of the lease, in process: the holder is another host's process (its
    liveness cannot be checked from here), so the lease is taken over only after its heartbeat has
    not changed for the stale time."""
    tracker = Tracker(mlflow_server.tracking_uri, f"lease-{uuid.uuid4().hex[:8]}")
    run_id = tracker.job_run(uuid.uuid4().hex, run_name="lease", tags={})
    elsewhere = "build-7.example.internal:4026531836:4242:123456"
    assert tracker.claim(run_id, "squeezeflow.lease.1", elsewhere)
    assert not tracker.claim(run_id, "squeezeflow.lease.1", "another-claimant:1:2:3")
    tracker.log(run_id, tags={"squeezeflow.lease": json.dumps({"n": 1, "owner": elsewhere, "beat": 7})})

    lease = JobLease(tracker, run_id, stale_s=1.5, poll_s=0.1)
    started = time.monotonic()
    lease.acquire()
    waited = time.monotonic() - started
    try:
        params, _ = tracker.run_params_and_tags(run_id)
        assert params["squeezeflow.lease.2"] == lease.me
        assert 1.5 <= waited < 10, f"took over after {waited:.1f} s"
        assert tracker.client.get_run(run_id).info.status == "RUNNING"
    finally:
        lease.release()
    state = json.loads(tracker.run_tags(run_id)["squeezeflow.lease"])
    assert state["n"] == 2 and state["released"] is True
