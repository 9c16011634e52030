"""MLflow as the system of record: one parent run per job, one nested run and one LoggedModel per
candidate, and the model registry for promotion.

Every get-or-create here is keyed by content hashes stored as tags, so a stage that Airflow or
Kubeflow retries finds its earlier run, model or version instead of making a duplicate.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from squeezeflow.errors import InfrastructureError

log = logging.getLogger(__name__)
T = TypeVar("T")

TAG_KIND = "squeezeflow.kind"
TAG_JOB = "squeezeflow.job_key"
TAG_CANDIDATE = "squeezeflow.candidate_key"
TAG_MODEL_ID = "squeezeflow.model_id"
TAG_PARENT = "mlflow.parentRunId"


def default_tracking_uri(workdir: Path) -> str:
    """The embedded default: a SQLite store under the project-local folder."""
    workdir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(workdir / 'mlflow.db').resolve()}"


def _is_connection_problem(err: BaseException) -> bool:
    from mlflow.exceptions import MlflowException
    from requests.exceptions import ConnectionError as RequestsConnectionError
    from requests.exceptions import Timeout

    if isinstance(err, RequestsConnectionError | Timeout | ConnectionError):
        return True
    if isinstance(err, MlflowException):
        text = str(err)
        return "Max retries exceeded" in text or "Connection refused" in text or "API request to" in text
    return False


class _Transient(Exception):
    pass


class Tracker:
    """A thin layer over ``MlflowClient`` for one experiment (the job's name)."""

    def __init__(self, tracking_uri: str, experiment: str, attempts: int = 3) -> None:
        import mlflow

        # MLflow's own HTTP retries back off for minutes by default; bound them so that a dead server
        # becomes a clear failure (exit 3) in tens of seconds. Users may override both.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment
        self.attempts = attempts
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.experiment_id = self._call("open the experiment", self._experiment, experiment)

    # -- plumbing ---------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run an MLflow call with bounded retries; connection failures become InfrastructureError."""

        @retry(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=0.5, max=8),
            reraise=True,
        )
        def attempt() -> T:
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                if _is_connection_problem(err):
                    raise _Transient(str(err)) from err
                raise

        try:
            return attempt()
        except _Transient as err:
            raise InfrastructureError(
                f"MLflow at {self.tracking_uri} is unreachable ({what}, {self.attempts} attempts): "
                f"{str(err)[:200]}"
            ) from None

    def _experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return str(exp.experiment_id)
        return str(self.client.create_experiment(name, artifact_location=self._local_artifact_location(name)))

    def _local_artifact_location(self, name: str) -> str | None:
        """For an embedded SQLite store, keep MLflow's artifacts beside the database (MLflow's own
        default is ./mlruns in whatever directory the process happens to run in)."""
        if not self.tracking_uri.startswith("sqlite:///"):
            return None
        db = Path(self.tracking_uri[len("sqlite:///") :])
        return (db.parent / "mlartifacts" / name).resolve().as_uri()

    def _find_run(self, filter_string: str) -> Any | None:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string, max_results=1, order_by=["attributes.start_time ASC"]
        )
        return runs[0] if runs else None

    # -- runs -------------------------------------------------------------------------------------
    def job_run(self, job_key: str, run_name: str, tags: dict[str, str]) -> str:
        """The job's parent run, created once per job key."""

        def get_or_create() -> str:
            found = self._find_run(f"tags.`{TAG_JOB}` = '{job_key}' and tags.`{TAG_KIND}` = 'job'")
            if found is not None:
                return str(found.info.run_id)
            run = self.client.create_run(
                self.experiment_id, run_name=run_name, tags={**tags, TAG_JOB: job_key, TAG_KIND: "job"}
            )
            return str(run.info.run_id)

        return self._call("find or create the job run", get_or_create)

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

        def do() -> None:
            existing = self.client.get_run(run_id).data.params
            new_params = [Param(k, str(v)[:6000]) for k, v in (params or {}).items() if k not in existing]
            ts = _now_ms()
            mets = [Metric(k, float(v), ts, 0, model_id=model_id) for k, v in (metrics or {}).items()]
            self.client.log_batch(
                run_id,
                metrics=mets,
                params=new_params,
                tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
            )

        self._call("log to the run", do)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._call("upload an artifact", self.client.log_artifact, run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._call("upload a text artifact", self.client.log_text, run_id, text, artifact_file)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self._call("end the run", self.client.set_terminated, run_id, status)

    # -- logged models ----------------------------------------------------------------------------
    def log_onnx_model(
        self, run_id: str, onnx_path: Path, name: str, input_example: np.ndarray, tags: dict[str, str]
    ) -> str:
        """Log the ONNX file as an MLflow LoggedModel of the run (once); returns its model id."""
        import mlflow
        import onnx
        from mlflow.models import infer_signature

        known = self.run_tags(run_id).get(TAG_MODEL_ID)
        if known:
            return known

        def do() -> str:
            from squeezeflow.models import predict_logits

            model = onnx.load(str(onnx_path))
            output = predict_logits(onnx_path, input_example, threads=1)
            signature = infer_signature(input_example, {"logits": output})
            with _resumed_run(run_id):
                info = mlflow.onnx.log_model(
                    model,
                    name=name,
                    signature=signature,
                    input_example=input_example,
                    onnx_execution_providers=["CPUExecutionProvider"],
                    save_as_external_data=False,
                    tags=tags,
                )
            return str(info.model_id)

        model_id = self._call("log the candidate model", do)
        self.log(run_id, tags={TAG_MODEL_ID: model_id})
        return model_id

    # -- registry ---------------------------------------------------------------------------------
    def find_version(self, model_name: str, candidate_key: str) -> Any | None:
        def do() -> Any | None:
            found = self.client.search_model_versions(
                f"name = '{model_name}' and tags.`{TAG_CANDIDATE}` = '{candidate_key}'"
            )
            return found[0] if found else None

        return self._call("search model versions", do)

    def register(
        self, model_id: str, model_name: str, run_id: str, tags: dict[str, str], description: str
    ) -> Any:
        from mlflow.exceptions import MlflowException

        def do() -> Any:
            try:
                self.client.create_registered_model(model_name)
            except MlflowException as err:
                if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
                    raise
            model = self.client.get_logged_model(model_id)
            return self.client.create_model_version(
                model_name,
                source=model.artifact_location,
                run_id=run_id,
                tags=tags,
                description=description,
                model_id=model_id,
            )

        return self._call("register the model version", do)

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        self._call("move the alias", self.client.set_registered_model_alias, model_name, alias, version)

    def alias_version(self, model_name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        def do() -> str | None:
            try:
                return str(self.client.get_model_version_by_alias(model_name, alias).version)
            except MlflowException as err:
                if "RESOURCE_DOES_NOT_EXIST" in str(err.error_code) or "INVALID_PARAMETER_VALUE" in str(
                    err.error_code
                ):
                    return None
                raise

        return self._call("read the alias", do)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


@contextmanager
def _resumed_run(run_id: str) -> Iterator[None]:
    """Make ``run_id`` the active fluent run (for ``mlflow.<flavor>.log_model``) without ending it."""
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.start_run(run_id=run_id, log_system_metrics=False)
    try:
        yield
    finally:
        # end_run marks the run FINISHED; the caller sets the final status explicitly afterwards.
        mlflow.end_run()
