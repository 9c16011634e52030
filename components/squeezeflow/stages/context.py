"""What every stage receives besides its typed inputs: where artifacts live, where runs are tracked,
and a local scratch directory. Built once by the adapter (CLI, Airflow task, Kubeflow component)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from squeezeflow.data import Dataset, fetch_dataset, load_dataset
from squeezeflow.errors import IntegrityError, InvalidInputError
from squeezeflow.store.artifacts import ArtifactStore, open_store

if TYPE_CHECKING:
    from squeezeflow.results import DatasetInfo
    from squeezeflow.tracking.tracker import Tracker

DEFAULT_HOME = Path(".squeezeflow")


@dataclass
class Settings:
    """Deployment settings (not part of the job spec): where artifacts and runs go."""

    artifacts: str
    tracking_uri: str
    workdir: Path

    @classmethod
    def resolve(
        cls, artifacts: str | None = None, tracking_uri: str | None = None, workdir: str | Path | None = None
    ) -> Settings:
        """Explicit values first, then SQUEEZEFLOW_* / MLFLOW_TRACKING_URI, then the embedded defaults
        under ./.squeezeflow (a local artifact directory and a SQLite MLflow store)."""
        from squeezeflow.tracking.client import default_tracking_uri

        home = Path(os.environ.get("SQUEEZEFLOW_HOME", DEFAULT_HOME))
        wd = Path(workdir or os.environ.get("SQUEEZEFLOW_WORKDIR") or home / "work")
        art = artifacts or os.environ.get("SQUEEZEFLOW_ARTIFACTS") or str(home / "artifacts")
        uri = (
            tracking_uri
            or os.environ.get("SQUEEZEFLOW_TRACKING_URI")
            or os.environ.get("MLFLOW_TRACKING_URI")
            or default_tracking_uri(home)
        )
        check_database_driver(uri)
        return cls(artifacts=art, tracking_uri=uri, workdir=wd)


# What to install for a database URI's driver, by SQLAlchemy driver name.
_DRIVER_PACKAGES = {
    "psycopg2": "squeezeflow[server] (psycopg2-binary)",
    "psycopg": "psycopg[binary]",
    "mysqldb": "mysqlclient",
    "pymysql": "PyMySQL",
    "pyodbc": "pyodbc",
}


def check_database_driver(tracking_uri: str) -> None:
    """A database tracking URI (``postgresql://``, ``mysql://``, ...) whose Python driver is not installed
    is an input error naming the driver and what to install, before anything connects (MLflow would fail
    later with a ModuleNotFoundError). Only the URI's scheme is ever quoted: it may hold a password."""
    scheme = tracking_uri.split("://", 1)[0] if "://" in tracking_uri else ""
    if not scheme or scheme.split("+")[0] in ("http", "https", "file", "databricks", "sqlite", "uc"):
        return
    from sqlalchemy.engine.url import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(tracking_uri).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        return  # not a database URI SQLAlchemy knows; MLflow reports it
    try:
        dialect.import_dbapi()
    except ImportError as err:
        package = _DRIVER_PACKAGES.get(dialect.driver, dialect.driver)
        raise InvalidInputError(
            f"the tracking URI's scheme {scheme}:// needs the Python database driver {dialect.driver!r} "
            f"(module {getattr(err, 'name', None) or dialect.driver!r}), which is not installed: "
            f"pip install '{package}', or name an installed driver in the scheme (for example "
            "postgresql+psycopg2:// with squeezeflow[server])"
        ) from None


@dataclass
class StageContext:
    store: ArtifactStore
    tracker: Tracker
    workdir: Path
    _datasets: dict[str, Dataset] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: Settings, experiment: str) -> StageContext:
        from squeezeflow.tracking.tracker import Tracker

        settings.workdir.mkdir(parents=True, exist_ok=True)
        return cls(
            store=open_store(settings.artifacts),
            tracker=Tracker(settings.tracking_uri, experiment),
            workdir=settings.workdir,
        )

    @property
    def cache(self) -> Path:
        return self.workdir / "cache"

    def scratch(self, name: str) -> Path:
        p = self.workdir / "scratch" / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def dataset(self, uri: str) -> Dataset:
        """The dataset at ``uri``, read once per process."""
        if uri not in self._datasets:
            self._datasets[uri] = load_dataset(fetch_dataset(uri, self.cache))
        return self._datasets[uri]

    def job_dataset(self, info: DatasetInfo) -> Dataset:
        """The dataset a job's engine reads, as ingest recorded it (``info``): the job's own, or the
        token ids ingest made of its raw texts, checked against their recorded content hash."""
        ds = self.dataset(info.engine_uri)
        if info.tokenized is not None and ds.sha256 != info.tokenized.sha256:
            raise IntegrityError(
                f"the tokenized dataset {info.tokenized.uri} has changed since ingest wrote it (sha256 "
                f"{ds.sha256[:12]}, recorded {info.tokenized.sha256[:12]}): run the job again"
            )
        return ds
