"""What every model of the job spec shares: strict validation, and the pattern of a name."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
"""A job, device profile or recipe name."""


class StrictModel(BaseModel):
    """Unknown fields are errors and a validated value never changes."""

    # allow_inf_nan: no budget, tolerance or threshold is meaningful at infinity or NaN (`.inf` is valid YAML)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
