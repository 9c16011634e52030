"""MLflow as the system of record: one parent run per job, one nested run and one LoggedModel per
candidate, and the model registry for promotion.

Every get-or-create here is keyed by content hashes stored as tags, so a stage that Airflow or
Kubeflow retries finds its earlier run, model or version instead of making a duplicate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from squeezeflow.errors import InfrastructureError
from squeezeflow.registry_tags import (
    DEFAULT_HISTORY_LIMIT,
    HISTORY_NONCE_BYTES,
    TAG_DESCRIPTION_SHA256,
    contest_tag,
    history_prefix,
    history_tag,
    rolled_back_tag,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

TAG_KIND = "squeezeflow.kind"
TAG_JOB = "squeezeflow.job_key"
TAG_CANDIDATE = "squeezeflow.candidate_key"
TAG_MODEL_ID = "squeezeflow.model_id"
TAG_PARENT = "mlflow.parentRunId"
# The job's lease (squeezeflow.job_lease): claims are run params, the holder's heartbeat a run tag.
PARAM_LEASE = "squeezeflow.lease."
TAG_LEASE = "squeezeflow.lease"


def redact_uri(uri: str) -> str:
    """``uri`` with the password of its user-info (``scheme://user:password@host``, as in a database
    URI) replaced by ``***``, for messages, logs and reports."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
        if parts.password is None:
            return uri
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return uri


def _has_password(uri: str) -> bool:
    from urllib.parse import urlsplit

    try:
        return bool(urlsplit(uri).password)
    except ValueError:
        return False


def redact_password(text: str, uri: str) -> str:
    """``text`` (an error from a client of ``uri``, which may quote the URL) without ``uri``'s password."""
    from urllib.parse import quote, unquote, urlsplit

    try:
        password = urlsplit(uri).password
    except ValueError:
        return text
    if not password:
        return text
    for form in {password, unquote(password), quote(password, safe="")}:
        text = text.replace(form, "***")
    return text


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


# The loggers MLflow configures when it is imported (mlflow.utils.logging_utils).
_MLFLOW_LOGGERS = ("mlflow", "alembic", "huey", "sqlalchemy.engine")


def mlflow_logs_through_logging() -> None:
    """Hand MLflow's log records to the application's logging, at their own level; call it after
    ``import mlflow``.

    On import MLflow gives its loggers a stderr handler of their own and stops them propagating, so
    they bypass the application's configuration: the CLI showed MLflow's INFO lines ("Creating initial
    MLflow database tables...") whatever its verbosity, and Airflow's task runner, which logs every
    line a task writes to stderr at ERROR level, logged them as errors. Only what MLflow's own
    configuration did is undone (``MLFLOW_LOGGING_LEVEL``, when set, still sets MLflow's level)."""
    from mlflow.utils.logging_utils import MlflowFormatter

    for name in _MLFLOW_LOGGERS:
        logger = logging.getLogger(name)
        own = [h for h in logger.handlers if isinstance(h.formatter, MlflowFormatter)]
        if not own:
            continue
        for handler in own:
            logger.removeHandler(handler)
        logger.propagate = True
        if name == "mlflow":
            level = os.environ.get("MLFLOW_LOGGING_LEVEL")
            logger.setLevel(level.upper() if level else logging.NOTSET)


class _Transient(Exception):
    pass


class Tracker:
    """A thin layer over ``MlflowClient`` for one experiment (the job's name)."""

    def __init__(self, tracking_uri: str, experiment: str | None, attempts: int = 3) -> None:
        """``experiment``: the job's experiment, created when missing; None for registry-only work."""
        import mlflow

        mlflow_logs_through_logging()
        # MLflow's own HTTP retries back off for minutes by default; bound them so that a dead server
        # becomes a clear failure (exit 3) in tens of seconds. Users may override both.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        # MlflowClient.set_terminated prints "View run <name> at: <tracking URI>/..." to stdout, with
        # the URI's password when it has one. Library code does not print; never a credential.
        if _has_password(tracking_uri):
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        else:
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.tracking_uri = tracking_uri
        self.unreachable = False  # set once a call gave up because MLflow did not answer
        self.experiment_name = experiment or ""
        self.attempts = attempts
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.experiment_id = (
            self._call("open the experiment", self._experiment, experiment) if experiment is not None else ""
        )

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
            self.unreachable = True
            where, detail = redact_uri(self.tracking_uri), redact_password(str(err), self.tracking_uri)
            raise InfrastructureError(
                f"MLflow at {where} is unreachable ({what}, {self.attempts} attempts): {detail[:200]}"
            ) from None

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return str(exp.experiment_id)
        try:
            return str(
                self.client.create_experiment(name, artifact_location=self._local_artifact_location(name))
            )
        except MlflowException as err:
            # Experiment names are unique: another process starting a job of the same name created it
            # between our lookup and our create.
            if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
                raise
            return self._experiment(name)

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
            ts = _now_ms()
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
        finished = self._adopt_or_drop_earlier_models(run_id, name, tags)
        if finished is not None:
            self.log(run_id, tags={TAG_MODEL_ID: finished})
            return finished

        def do() -> str:
            from squeezeflow.onnx_heads import served_outputs, takes_any_rank

            model = onnx.load(str(onnx_path))
            # A graph that takes one sample as well as a batch has no input schema: MLflow's checks a
            # tensor's rank against it, and the graph itself checks the element type and sample shape.
            signature = infer_signature(
                None if takes_any_rank(onnx_path) else input_example, served_outputs(onnx_path, input_example)
            )
            # The LoggedModel is created here, in the run's experiment, and handed to the flavor with
            # the run (both passed through to mlflow.models.Model.log), instead of resuming the run as
            # MLflow's active ("fluent") run: ending that marks the run FINISHED, so a job killed
            # afterwards would look finished, and prints the tracking URI, password included.
            pending = self.client.create_logged_model(
                self.experiment_id,
                name=name,
                source_run_id=run_id,
                tags=tags,
                params={
                    k: v
                    for k, v in self.client.get_run(run_id).data.params.items()
                    if not k.startswith(PARAM_LEASE)
                },
            )
            info = mlflow.onnx.log_model(
                model,
                name=name,
                signature=signature,
                input_example=input_example,
                onnx_execution_providers=["CPUExecutionProvider"],
                save_as_external_data=False,
                run_id=run_id,
                model_id=pending.model_id,
            )
            return str(info.model_id)

        model_id = self._call("log the candidate model", do)
        self.log(run_id, tags={TAG_MODEL_ID: model_id})
        return model_id

    def _adopt_or_drop_earlier_models(self, run_id: str, name: str, tags: dict[str, str]) -> str | None:
        """What an earlier attempt left of this run's model ``name`` when it stopped before tagging the
        run (a killed worker): a finished model of the same bytes is returned for reuse; unfinished
        ones are deleted, so that a retry leaves exactly one LoggedModel per candidate."""
        from mlflow.entities import LoggedModelStatus

        def do() -> str | None:
            earlier = self.client.search_logged_models(
                [self.experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'"
            )
            keep = None
            for m in earlier:
                same_bytes = all(m.tags.get(k) == v for k, v in tags.items())
                if keep is None and m.status == LoggedModelStatus.READY and same_bytes:
                    keep = str(m.model_id)
                else:
                    log.info(
                        "deleting LoggedModel %s of run %s left by an interrupted attempt", m.model_id, run_id
                    )
                    self.client.delete_logged_model(m.model_id)
            return keep

        return self._call("look for models of an interrupted attempt", do)

    def logged_model_ready(self, model_id: str) -> bool:
        """Whether the LoggedModel exists and finished logging (an interrupted log leaves it PENDING)."""
        from mlflow.entities import LoggedModelStatus
        from mlflow.exceptions import MlflowException

        def do() -> bool:
            try:
                return bool(self.client.get_logged_model(model_id).status == LoggedModelStatus.READY)
            except MlflowException as err:
                if "RESOURCE_DOES_NOT_EXIST" in str(err.error_code):
                    return False
                raise

        return self._call("read the logged model", do)

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

    def set_alias(self, model_name: str, alias: str, version: str | None) -> None:
        """Point ``alias`` at ``version``; None removes the alias."""
        if version is None:
            self._call("remove the alias", self.client.delete_registered_model_alias, model_name, alias)
        else:
            self._call("move the alias", self.client.set_registered_model_alias, model_name, alias, version)

    @contextmanager
    def alias_moved(
        self,
        model_name: str,
        alias: str,
        version: str,
        back_to: str | None,
        undo: Callable[[], None] | None = None,
        retry: str = "Run the job again to promote",
    ) -> Iterator[None]:
        """Point ``alias`` at ``version`` for a block that records the move (history, verdict tags): all
        or nothing. When moving or recording fails, ``undo`` takes back what the block recorded, the
        alias goes back to ``back_to`` (removed when None) if it still points at ``version``, and an
        InfrastructureError says what failed, where the alias is now, and ``retry``. MLflow cannot move an
        alias and write a tag in one transaction; this keeps a half-recorded move from staying behind."""
        try:
            self.set_alias(model_name, alias, version)
            yield
        except Exception as err:
            raise self._put_alias_back(model_name, alias, version, back_to, undo, err, retry) from err

    def _put_alias_back(
        self,
        model_name: str,
        alias: str,
        version: str,
        back_to: str | None,
        undo: Callable[[], None] | None,
        err: Exception,
        retry: str,
    ) -> InfrastructureError:
        def said(e: Exception, n: int) -> str:
            return " ".join(redact_password(str(e), self.tracking_uri).split())[:n]

        failed = f"moving {model_name}@{alias} to version {version} could not be recorded ({said(err, 300)})"
        back = f"version {back_to}" if back_to is not None else "no version (the alias was not set)"
        try:
            if self.alias_version(model_name, alias) == version:
                self.set_alias(model_name, alias, back_to)
        except Exception as undo_err:
            log.debug("putting %s@%s back failed", model_name, alias, exc_info=True)
            to = f" --to {back_to}" if back_to is not None else ""
            return InfrastructureError(
                f"{failed}, and putting @{alias} back to {back} failed too ({said(undo_err, 200)}): it may "
                f"point at version {version} with no record of the move. {retry} (that records or redoes "
                f"the move), or set it back with `squeezeflow rollback {model_name} --alias {alias}{to}`"
            )
        leftover = ""
        try:
            if undo is not None:
                undo()
        except Exception as undo_err:
            log.debug("taking back the records of %s@%s failed", model_name, alias, exc_info=True)
            leftover = f" (a record of the refused move may remain: {said(undo_err, 200)})"
        return InfrastructureError(
            f"{failed}; @{alias} was put back to {back}, so the registry is as it was before"
            f"{leftover}. {retry}"
        )

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

    def model_version(self, model_name: str, version: str) -> Any:
        return self._call("read a model version", self.client.get_model_version, model_name, version)

    def set_version_tags(self, model_name: str, version: str, tags: dict[str, str]) -> None:
        def do() -> None:
            for k, v in tags.items():
                self.client.set_model_version_tag(model_name, version, k, v)

        self._call("tag the model version", do)

    # -- promotion contests -----------------------------------------------------------------------
    # MLflow has no conditional ("compare-and-set") alias update, so promotions to one alias take
    # turns: a version registers with the tag ``squeezeflow.contest.<alias> = pending`` in the same
    # call that creates it, and the registry numbers versions atomically, so the version number is a
    # ticket. A contender waits until no lower-numbered version is still pending, then (in
    # `squeezeflow.stages.promote.contest_alias`) compares itself with the holder and the contenders
    # still waiting, sets the alias, re-reads it, and resolves its tag (won/lost). Pending versions
    # whose contender stopped sending heartbeats (it was killed) stop blocking after ``stale_s``.

    def contest_turn(
        self, model_name: str, version: str, alias: str, stale_s: float, settle_s: float
    ) -> list[Any]:
        """Block until it is ``version``'s turn to decide ``alias``: at least ``settle_s`` after the call
        (so that contenders registering at about the same time are all seen), and once every
        lower-numbered version still contending has resolved or gone stale (no heartbeat for
        ``stale_s``). Returns the other live contenders (their turns come after this one).

        The heartbeat re-saves this version's description, which moves its server-side
        ``last_updated_timestamp``, so staleness is judged on the registry's clock alone."""
        key = contest_tag(alias)
        mine = int(version)
        started = time.monotonic()
        last_beat = -1e9
        server_now = _now_ms()
        while True:
            if time.monotonic() - last_beat > min(5.0, stale_s / 4):
                mv = self.model_version(model_name, version)
                beat = self._call(
                    "send a promotion heartbeat",
                    self.client.update_model_version,
                    model_name,
                    version,
                    mv.description or "",
                )
                server_now = int(beat.last_updated_timestamp or _now_ms())
                last_beat = time.monotonic()
            pending = self._call(
                "list pending promotions",
                self.client.search_model_versions,
                f"name = '{model_name}' and tags.`{key}` = 'pending'",
            )
            others = [p for p in pending if int(p.version) != mine]
            live = [p for p in others if server_now - int(p.last_updated_timestamp or 0) <= stale_s * 1000]
            stale = sorted(str(p.version) for p in others if p not in live)
            ahead = [p for p in live if int(p.version) < mine]
            if not ahead and time.monotonic() - started >= settle_s:
                if stale:
                    log.warning(
                        "%s: versions %s are still marked as contending for @%s but their promotion "
                        "stopped (no heartbeat for %.0f s); not waiting for them",
                        model_name,
                        ", ".join(stale),
                        alias,
                        stale_s,
                    )
                return live
            time.sleep(0.1 + 0.2 * random.random())

    def record_alias_move(
        self,
        model_name: str,
        alias: str,
        from_version: str | None,
        to_version: str,
        kind: str,
        reason: str,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
    ) -> AliasMove:
        """Append one event to the alias's history: a registered-model tag of its own
        (``squeezeflow.alias_history.<alias>.<ms>-<nonce>``), so concurrent writers never overwrite
        each other's events. Events are ordered by the writing host's clock.

        The event carries the rollback chain after the move (`chain_after`), so that rollback reads the
        newest event instead of replaying a history that `prune_alias_history` shortens, and
        ``history_limit``, the number of entries the history keeps, so that a rollback, which has no
        job spec, keeps as many as the promotion before it did."""
        history = self.alias_history(model_name, alias)
        move = AliasMove(
            at_ms=_now_ms(),
            kind=kind,
            from_version=from_version,
            to_version=to_version,
            reason=reason[:1000],
            history_limit=history_limit,
            chain=chain_after(history, from_version, to_version, kind, history_limit),
        )
        key = history_tag(alias, move.at_ms, secrets.token_hex(HISTORY_NONCE_BYTES))
        self._call(
            "record the alias history",
            self.client.set_registered_model_tag,
            model_name,
            key,
            json.dumps(dataclasses.asdict(move), sort_keys=True),
        )
        return move

    def forget_alias_move(self, model_name: str, alias: str, move: AliasMove) -> None:
        """Delete the history entry of ``move``: a move that was taken back before it was complete."""
        entry = json.dumps(dataclasses.asdict(move), sort_keys=True)
        prefix = history_prefix(alias)

        def do() -> None:
            tags = self.client.get_registered_model(model_name).tags
            for key in [k for k, v in tags.items() if k.startswith(prefix) and v == entry]:
                self.client.delete_registered_model_tag(model_name, key)

        self._call("take back the alias history entry", do)

    def prune_alias_history(self, model_name: str, alias: str, keep: int) -> int:
        """Delete all but the newest ``keep`` entries of the alias's history (one registered-model tag
        each); returns how many were deleted. Called after a move is complete, never during one, so a
        move that is taken back (`alias_moved`) cannot cost an older entry. Best effort: the move is
        already recorded, so a failure is logged and the next move prunes again. Two processes pruning
        at once delete the same oldest tags (deleting a deleted tag is a no-op in MLflow)."""
        prefix = history_prefix(alias)

        def do() -> int:
            tags = self.client.get_registered_model(model_name).tags
            keys = sorted(k for k in tags if k.startswith(prefix))
            oldest = keys[: max(0, len(keys) - max(1, keep))]
            for key in oldest:
                self.client.delete_registered_model_tag(model_name, key)
            return len(oldest)

        try:
            dropped = self._call("prune the alias history", do)
        except Exception as err:
            log.warning(
                "could not delete the oldest alias history entries of %s@%s (the move itself is recorded; "
                "the next move tries again): %s",
                model_name,
                alias,
                redact_password(str(err), self.tracking_uri)[:300],
            )
            return 0
        if dropped:
            log.info(
                "%s@%s: deleted the %d oldest alias history entries (keeping %d)",
                model_name,
                alias,
                dropped,
                keep,
            )
        return dropped

    def describe_registered_model(self, model_name: str, description: str) -> bool:
        """Give the registered model ``description`` unless a person wrote its description; True when it
        was written. squeezeflow writes a description only while the model has none, or has exactly the
        one squeezeflow wrote last: each write records the text's SHA-256 in the registered-model tag
        ``squeezeflow.description_sha256``, so a description edited or written in the MLflow UI (or by
        anyone else) no longer matches and is never overwritten. Best effort: a failure is logged, never
        fails a promotion."""
        digest = hashlib.sha256(description.encode()).hexdigest()

        def do() -> bool:
            model = self.client.get_registered_model(model_name)
            current = model.description or ""
            if current == description and (model.tags or {}).get(TAG_DESCRIPTION_SHA256) == digest:
                return False
            ours = hashlib.sha256(current.encode()).hexdigest() == (model.tags or {}).get(
                TAG_DESCRIPTION_SHA256
            )
            # The same text as ours without the tag: a write interrupted before tagging (retry it).
            if current.strip() and not ours and current != description:
                log.info("%s has a description squeezeflow did not write; leaving it as it is", model_name)
                return False
            if current != description:
                self.client.update_registered_model(model_name, description)
            self.client.set_registered_model_tag(model_name, TAG_DESCRIPTION_SHA256, digest)
            return True

        try:
            return self._call("describe the registered model", do)
        except Exception as err:
            log.warning(
                "could not write the description of the registered model %s: %s",
                model_name,
                redact_password(str(err), self.tracking_uri)[:300],
            )
            return False

    def alias_history(self, model_name: str, alias: str) -> list[AliasMove]:
        """Every recorded move of ``alias`` that the history still keeps, oldest first."""
        prefix = history_prefix(alias)
        tags = self._call("read the alias history", self.client.get_registered_model, model_name).tags
        moves = []
        for k in sorted(k for k in tags if k.startswith(prefix)):
            try:
                moves.append(AliasMove(**json.loads(tags[k])))
            except (TypeError, ValueError):
                log.warning("ignoring an unreadable alias history entry %s on %s", k, model_name)
        return moves

    def rollback_alias(self, model_name: str, alias: str, to_version: str | None = None) -> AliasMove:
        """Move ``alias`` back to the version it pointed at before its last promotion (or to
        ``to_version``), and record the move in the alias's history. The version moved away from is
        tagged ``squeezeflow.rolled_back.<alias>`` and squeezeflow does not promote it again (unless it
        is rolled back to with ``to_version``). A rollback does not take a turn in the promotion queue:
        run it when no promotion to the alias is under way."""
        from mlflow.exceptions import MlflowException

        from squeezeflow.errors import InvalidInputError

        def missing(err: MlflowException) -> bool:
            return "RESOURCE_DOES_NOT_EXIST" in str(err.error_code)

        try:
            history = self.alias_history(model_name, alias)
        except MlflowException as err:
            if missing(err):
                raise InvalidInputError(f"no registered model named {model_name!r}") from None
            raise
        current = self.alias_version(model_name, alias)
        if current is None:
            raise InvalidInputError(f"{model_name} has no alias @{alias}: nothing to roll back")
        if to_version is None:
            to_version = previous_holder(history, current)
            if to_version is None:
                recorded = history[-1].to_version if history else None
                why = (
                    "its history records no version before it"
                    if recorded in (None, current)
                    else f"its history last recorded version {recorded} there (the alias was moved "
                    "outside squeezeflow)"
                )
                raise InvalidInputError(
                    f"{model_name}@{alias} points at version {current} and {why}; "
                    "name the version to go back to with --to VERSION"
                )
        else:
            try:
                self.model_version(model_name, to_version)
            except MlflowException as err:
                if missing(err) or "INVALID_PARAMETER_VALUE" in str(err.error_code):
                    raise InvalidInputError(f"{model_name} has no version {to_version!r}") from None
                raise
        if to_version == current:
            raise InvalidInputError(f"{model_name}@{alias} already points at version {current}")
        mark = rolled_back_tag(alias)

        def unmark() -> None:
            self._call(
                "clear the rolled-back mark", self.client.delete_model_version_tag, model_name, current, mark
            )

        keep = history_limit_of(history)
        with self.alias_moved(
            model_name, alias, to_version, back_to=current, undo=unmark, retry="Run the rollback again"
        ):
            self.set_version_tags(model_name, current, {mark: str(_now_ms())})
            if mark in (self.model_version(model_name, to_version).tags or {}):
                self._call(  # moved back there deliberately: it may be promoted again
                    "clear the rolled-back mark",
                    self.client.delete_model_version_tag,
                    model_name,
                    to_version,
                    mark,
                )
            # the history last: a move it records is complete
            move = self.record_alias_move(
                model_name,
                alias,
                current,
                to_version,
                "rollback",
                f"rolled back from version {current}",
                history_limit=keep,
            )
        self.prune_alias_history(model_name, alias, keep)
        return move


# How long a process that created a job's run waits before looking for a twin (`Tracker.job_run`).
JOB_RUN_SETTLE_S = 0.5


@dataclasses.dataclass(frozen=True)
class AliasMove:
    """One move of an alias, as recorded in the registered model's tags."""

    at_ms: int
    kind: str  # "promote" | "rollback"
    from_version: str | None
    to_version: str
    reason: str
    # How many entries the alias's history keeps (the promoting job's registry.history_limit), and the
    # rollback chain after this move (`chain_after`); both None in entries written before squeezeflow
    # bounded the history.
    history_limit: int | None = None
    chain: list[str] | None = None


def history_limit_of(history: list[AliasMove]) -> int:
    """How many entries the alias's history keeps: what its newest entry recorded, else the default."""
    recorded = [m.history_limit for m in history if m.history_limit is not None]
    return recorded[-1] if recorded else DEFAULT_HISTORY_LIMIT


def rollback_chain(history: list[AliasMove]) -> list[str]:
    """The versions the alias went through that a rollback goes back to, newest last: the chain the
    newest event recorded, else the history replayed as a stack (a promotion pushes, a rollback pops
    back to its target), so that rolling back twice goes back two promotions."""
    stack: list[str] = []
    for move in history:
        if move.chain is not None:
            stack = list(move.chain)
        elif move.kind == "rollback" and move.to_version in stack:
            del stack[len(stack) - stack[::-1].index(move.to_version) :]
        else:
            stack.append(move.to_version)
    return stack


def chain_after(
    history: list[AliasMove], from_version: str | None, to_version: str, kind: str, limit: int
) -> list[str]:
    """The rollback chain after moving the alias from ``from_version`` to ``to_version``: a rollback to a
    version in the chain goes back to it (dropping what came after), any other move pushes. When the
    alias was moved outside squeezeflow (the chain does not end where it pointed), the chain starts
    again from that version. Keeps the newest ``limit + 1`` versions: ``limit`` moves back."""
    stack = rollback_chain(history)
    if not stack or stack[-1] != from_version:
        stack = [] if from_version is None else [from_version]
    if kind == "rollback" and to_version in stack:
        del stack[len(stack) - stack[::-1].index(to_version) :]
    else:
        stack.append(to_version)
    return stack[-(max(1, limit) + 1) :]


def previous_holder(history: list[AliasMove], current: str) -> str | None:
    """The version the alias held before ``current`` got it, by the rollback chain (`rollback_chain`).
    None when the chain does not end at ``current`` (the alias was moved outside squeezeflow since) or
    holds nothing before it."""
    stack = rollback_chain(history)
    if not stack or stack[-1] != current:
        return None
    earlier = [v for v in stack[:-1] if v != current]
    return earlier[-1] if earlier else None


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
