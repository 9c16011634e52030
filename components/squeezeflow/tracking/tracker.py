"""`Tracker`: the one object the stages hold for MLflow, every job of `squeezeflow.tracking` on one
client.
"""

from __future__ import annotations

from squeezeflow.tracking.aliases import Aliases
from squeezeflow.tracking.models import LoggedModels


class Tracker(LoggedModels, Aliases):
    """A thin layer over ``MlflowClient`` for one experiment (the job's name): its runs
    (`squeezeflow.tracking.runs`), LoggedModels (`.models`), the model registry (`.registry`) and the
    alias contests and history (`.aliases`)."""
