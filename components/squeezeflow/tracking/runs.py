"""A job's MLflow runs: one parent run per job and one nested run per candidate, found again by the
content hashes stored as their tags, and the params, metrics, tags and artifacts logged to them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from squeezeflow.tracking.client import TrackingClient, now_ms

log = logging.getLogger(__name__)

TAG_KIND = "squeezeflow.kind"
TAG_JOB = "squeezeflow.job_key"
TAG_CANDIDATE = "squeezeflow.candidate_key"
TAG_MODEL_ID = "squeezeflow.model_id"
TAG_PARENT = "mlflow.parentRunId"
# The job's lease (squeezeflow.tracking.lease): claims are run params, the holder's heartbeat a run tag.
PARAM_LEASE = "squeezeflow.lease."
TAG_LEASE = "squeezeflow.lease"

# How long a process that created a job's run waits before looking for a twin (`Runs.job_run`).
JOB_RUN_SETTLE_S = 0.5


class Runs(TrackingClient):
    """The job's parent run and the candidates' nested runs, and what is logged to them."""

    def _find_run(self, filter_string: str) -> Any | None:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string, max_results=1, order_by=["attributes.start_time ASC"]
        )
        return runs[0] if runs else None

    def job_run(self, job_key: str, run_name: str, tags: dict[str, str]) -> str:
        """The job's parent run, created once per job key.

        MLflow cannot create a run only if none exists, so two processes starting the same job at the
        same moment may both create one. A process that created the run therefore waits
        `JOB_RUN_SETTLE_S` (longer than a lookup and a create take), looks again and keeps the earliest
        run of the job (by start time, then id), deleting its own when that is another: every process
        ends up with the same run."""
        where = f"tags.`{TAG_JOB}` = '{job_key}' and tags.`{TAG_KIND}` = 'job'"

        def earliest() -> str | None:
            runs = self.client.search_runs([self.experiment_id], where, max_results=100)
            first = min(runs, key=lambda r: (r.info.start_time, r.info.run_id), default=None)
            return None if first is None else str(first.info.run_id)

        found = self._call("find the job run", earliest)
        if found is not None:
            return found
        mine = self._call(
            "create the job run",
            lambda: str(
                self.client.create_run(
                    self.experiment_id, run_name=run_name, tags={**tags, TAG_JOB: job_key, TAG_KIND: "job"}
                ).info.run_id
            ),
        )
        time.sleep(JOB_RUN_SETTLE_S)
        kept = self._call("find the job run", earliest) or mine
        if kept != mine:
            log.info("another process opened job run %s at the same time; using it, deleting %s", kept, mine)
            self._call("delete a duplicate job run", self.client.delete_run, mine)
        return kept

    def candidate_run(
        self, parent_run_id: str, candidate_key: str, run_name: str, tags: dict[str, str]
    ) -> str:
        """The candidate's nested run under the job run, created once per candidate key."""

        def get_or_create() -> str:
            found = self._find_run(
                f"tags.`{TAG_CANDIDATE}` = '{candidate_key}' and tags.`{TAG_PARENT}` = '{parent_run_id}'"
            )
            if found is not None:
                return str(found.info.run_id)
            run = self.client.create_run(
                self.experiment_id,
                run_name=run_name,
                tags={**tags, TAG_CANDIDATE: candidate_key, TAG_PARENT: parent_run_id, TAG_KIND: "candidate"},
            )
            return str(run.info.run_id)

        return self._call("find or create the candidate run", get_or_create)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self._call("read run tags", self.client.get_run, run_id).data.tags)

    def run_params_and_tags(self, run_id: str) -> tuple[dict[str, str], dict[str, str]]:
        run = self._call("read the run", self.client.get_run, run_id)
        return dict(run.data.params), dict(run.data.tags)

    def claim(self, run_id: str, key: str, value: str) -> bool:
        """Log the param ``key = value`` unless the run has it with another value (then False). MLflow
        never changes a param's value, so of processes claiming one key at once exactly one wins."""
        from mlflow.exceptions import MlflowException

        def do() -> bool:
            try:
                self.client.log_param(run_id, key, value)
            except MlflowException as err:
                if "INVALID_PARAMETER_VALUE" in str(err.error_code):
                    return False
                raise
            return True

        return self._call("claim a run param", do)

    def set_status(self, run_id: str, status: str) -> None:
        """Set the run's status without ending it (`finish` ends it)."""
        self._call("set the run status", self.client.update_run, run_id, status)

    def log(
        self,
        run_id: str,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        model_id: str | None = None,
    ) -> None:
        """Params (logged once; an identical re-log is a no-op), metrics and tags."""
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.exceptions import MlflowException

        def do() -> None:
            ts = now_ms()
            mets = [Metric(k, float(v), ts, 0, model_id=model_id) for k, v in (metrics or {}).items()]
            for attempt in (1, 2):
                existing = self.client.get_run(run_id).data.params
                new_params = [Param(k, str(v)[:6000]) for k, v in (params or {}).items() if k not in existing]
                try:
                    self.client.log_batch(
                        run_id,
                        metrics=mets,
                        params=new_params,
                        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
                    )
                    return
                except MlflowException:
                    # Another process logging the same params at the same moment makes the server
                    # refuse the batch; read them again and log only what is still missing.
                    if attempt == 2 or not new_params:
                        raise

        self._call("log to the run", do)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._call("upload an artifact", self.client.log_artifact, run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._call("upload a text artifact", self.client.log_text, run_id, text, artifact_file)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self._call("end the run", self.client.set_terminated, run_id, status)
