"""What every stage receives besides its typed inputs: where artifacts live, where runs are tracked,
and a local scratch directory. Built once by the adapter (CLI, Airflow task, Kubeflow component)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from squeezeflow.data import Dataset, fetch_dataset, load_dataset
from squeezeflow.store import ArtifactStore, open_store

if TYPE_CHECKING:
    from squeezeflow.tracking import Tracker

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
        from squeezeflow.tracking import default_tracking_uri

        home = Path(os.environ.get("SQUEEZEFLOW_HOME", DEFAULT_HOME))
        wd = Path(workdir or os.environ.get("SQUEEZEFLOW_WORKDIR") or home / "work")
        art = artifacts or os.environ.get("SQUEEZEFLOW_ARTIFACTS") or str(home / "artifacts")
        uri = (
            tracking_uri
            or os.environ.get("SQUEEZEFLOW_TRACKING_URI")
            or os.environ.get("MLFLOW_TRACKING_URI")
            or default_tracking_uri(home)
        )
        return cls(artifacts=art, tracking_uri=uri, workdir=wd)


@dataclass
class StageContext:
    store: ArtifactStore
    tracker: Tracker
    workdir: Path
    _datasets: dict[str, Dataset] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: Settings, experiment: str) -> StageContext:
        from squeezeflow.tracking import Tracker

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
