"""The connection to MLflow: a client for one experiment whose calls retry a bounded number of times and
turn an unreachable server into an InfrastructureError, and the redaction of a tracking URI's password
from what squeezeflow says.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from squeezeflow.errors import InfrastructureError

log = logging.getLogger(__name__)
T = TypeVar("T")


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


class TrackingClient:
    """``MlflowClient`` for one experiment (the job's name), with bounded retries (`_call`). The jobs
    built on it: `squeezeflow.tracking.runs`, `.models`, `.registry` and `.aliases`."""

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


def now_ms() -> int:
    import time

    return int(time.time() * 1000)
