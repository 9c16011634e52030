"""The job's MLflow run says how the job ended: FAILED after an error, RUNNING after the process was
killed outright (nothing could run to say otherwise), FINISHED once a run of the job completes.

What the tests prove, with `squeezeflow run` processes on jobs of their own: a job that crashes after
opening its run (its metric raises: exit 4) leaves the run FAILED; a job SIGKILLed while it builds its
candidates (its baseline model already logged under the run) leaves the run RUNNING; running the job
again takes it over at once (the killed process is gone), continues in the same run and finishes it,
with one LoggedModel per run; neither run printed the tracking URI's password.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from mlflow.entities import LoggedModelStatus

from tests.reliability.cli_jobs import new_job
from tests.reliability.conftest import wait_for
from tests.servers import MlflowServer

pytestmark = pytest.mark.integration


def test_a_job_that_crashes_after_opening_its_run_leaves_the_run_failed(
    tmp_path: Path, mlflow_server: MlflowServer, wide_onnx: Path, small_data: Path
) -> None:
    job = new_job(
        tmp_path,
        mlflow_server,
        wide_onnx,
        small_data,
        "crash",
        task={"metric": "tests.reliability.crashing_metric:crash"},
    )
    proc = job.start("work", "result.json")
    assert proc.wait(timeout=300) == 4
    out, err = job.output("result.json")
    assert "the metric crashed (on purpose, in a test)" in err, err[-3000:]
    (run,) = job.client().search_runs([job.experiment_id()], "tags.`squeezeflow.kind` = 'job'")
    assert run.info.status == "FAILED"
    assert job.password not in out + err


def test_a_killed_job_leaves_its_run_running_and_the_rerun_finishes_it(
    tmp_path: Path, mlflow_server: MlflowServer, wide_onnx: Path, small_data: Path
) -> None:
    job = new_job(tmp_path, mlflow_server, wide_onnx, small_data, "killed")
    client = job.client()

    def runs(kind: str) -> list[str]:
        exp = client.get_experiment_by_name(job.name)
        if exp is None:
            return []
        found = client.search_runs([exp.experiment_id], f"tags.`squeezeflow.kind` = '{kind}'")
        return [r.info.run_id for r in found]

    first = job.start("work", "first.json")
    try:
        # candidates are built after the baseline's LoggedModel was logged under the job's run
        wait_for("the job's first candidate run", lambda: first.poll() is None and runs("candidate"), 300)
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL, job.output("first.json")[1][-3000:]
    (parent,) = runs("job")
    assert client.get_run(parent).info.status == "RUNNING"

    rerun = job.start("work", "second.json")
    assert rerun.wait(timeout=400) == 0, job.output("second.json")[1][-3000:]
    out, err = job.output("second.json")
    assert "has not been heard of" not in err and "is running this job" not in err, err[-3000:]
    result = json.loads((tmp_path / "second.json").read_text())
    assert result["parent_run_id"] == parent and result["promotion"]["promoted"]
    assert runs("job") == [parent]
    assert client.get_run(parent).info.status == "FINISHED"
    exp = job.experiment_id()
    for run_id in [parent, *runs("candidate")]:
        models = client.search_logged_models([exp], f"source_run_id = '{run_id}'")
        assert [m.status for m in models] == [LoggedModelStatus.READY]
    for text in (*job.output("first.json"), out, err):
        assert job.password not in text
