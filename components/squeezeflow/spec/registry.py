"""The registry target of the job spec: the registered model and the alias a promotion moves."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from squeezeflow.spec.base import StrictModel
from squeezeflow.tracking.registry_tags import (
    DEFAULT_HISTORY_LIMIT,
    MAX_ALIAS_LENGTH,
    MAX_HISTORY_LIMIT,
    MAX_MODEL_NAME_LENGTH,
    MAX_REGISTERED_MODEL_DESCRIPTION_LENGTH,
)

# RegistryTarget fields that change how the registry shows and keeps a result, not the result.
PRESENTATION_FIELDS = ("description", "history_limit")


class RegistryTarget(StrictModel):
    # Both limits are what the MLflow registry accepts; the alias's also leaves room for the tag keys
    # squeezeflow builds from it (squeezeflow.tracking.registry_tags).
    model_name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=MAX_MODEL_NAME_LENGTH,
        description="Registered model name in the MLflow registry.",
    )
    alias: str = Field(
        default="champion",
        pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$",
        max_length=MAX_ALIAS_LENGTH,
        description="The registry alias a promotion moves (letters, digits, _ and -).",
    )
    description: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_REGISTERED_MODEL_DESCRIPTION_LENGTH,
        description="The registered model's description in the MLflow registry (Markdown); unset, "
        "squeezeflow writes one from the job (what the model is, the job, the metric and the tolerance). "
        "Either is written only while the model has no description or still has the one squeezeflow "
        "wrote last: a description a person wrote in the registry is never overwritten.",
    )
    history_limit: int = Field(
        default=DEFAULT_HISTORY_LIMIT,
        ge=1,
        le=MAX_HISTORY_LIMIT,
        description="How many moves of the alias the registry keeps in its history (one registered-model "
        "tag each, the newest; older ones are deleted after each move); `squeezeflow rollback` goes back "
        "at most this many moves, one per command.",
    )

    @field_validator("alias")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v.lower() == "latest" or re.fullmatch(r"[vV]\d+", v):
            raise ValueError(f"alias {v!r} is reserved by MLflow (latest, v<number>)")
        return v
