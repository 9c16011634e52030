"""The tags squeezeflow writes in the MLflow model registry for an alias, built in one place, and the
longest alias and registered model name that fit them.

MLflow refuses a registered-model or model-version tag whose key is longer than 250 characters, and
squeezeflow builds tag keys from the alias (``squeezeflow.contest.<alias>.against``,
``squeezeflow.alias_history.<alias>.<ms>-<nonce>``, ...). An alias that MLflow accepts (up to 255
characters) but that makes one of these keys too long would let a promotion move the alias and then
fail to record the move, so the job spec allows only aliases whose every key fits
(`MAX_ALIAS_LENGTH`).

MLflow's limits are mirrored here rather than imported, so that validating a spec does not import
MLflow (Airflow parses DAG files with the spec); `tests/reliability/test_registry_limits.py` checks them
against the installed MLflow.
"""

from __future__ import annotations

# mlflow.utils.validation.MAX_MODEL_REGISTRY_TAG_KEY_LENGTH: registered-model and model-version tag keys.
MLFLOW_MAX_REGISTRY_TAG_KEY_LENGTH = 250
# mlflow.utils.validation.MAX_REGISTERED_MODEL_ALIAS_LENGTH.
MLFLOW_MAX_ALIAS_LENGTH = 255
# MLflow's SQL schema: registered_models.name (and every table keyed by it) is VARCHAR(256).
MLFLOW_MAX_MODEL_NAME_LENGTH = 256

# MLflow's SQL schema: registered_models.description (and model_versions.description) is VARCHAR(5000).
MAX_REGISTERED_MODEL_DESCRIPTION_LENGTH = 5000

# How many moves of an alias its history keeps unless the spec says otherwise (registry.history_limit).
DEFAULT_HISTORY_LIMIT = 20
# Each history entry carries the rollback chain (up to this many versions plus one) beside a reason of up
# to 1000 characters: at this limit it stays well inside a tag value (VARCHAR(5000) in MLflow's schema).
MAX_HISTORY_LIMIT = 100

TAG_CONTEST = "squeezeflow.contest."
TAG_HISTORY = "squeezeflow.alias_history."
TAG_ROLLED_BACK = "squeezeflow.rolled_back."
# On the registered model: the SHA-256 of the description squeezeflow wrote last. A description whose hash
# is not this one was written (or edited) by a person, and squeezeflow leaves it alone.
TAG_DESCRIPTION_SHA256 = "squeezeflow.description_sha256"
# What a resolved contest records beside its verdict (``squeezeflow.contest.<alias>.<detail>``).
CONTEST_DETAILS = ("against", "reason", "by")
HISTORY_NONCE_BYTES = 3
_HISTORY_MS_DIGITS = 13  # milliseconds since 1970 have 13 digits until the year 2286


def contest_tag(alias: str, detail: str | None = None) -> str:
    """The model-version tag that says where the version stands for ``alias`` (pending, won or lost),
    or, with ``detail`` (one of `CONTEST_DETAILS`), what the contest recorded beside it."""
    if detail is None:
        return f"{TAG_CONTEST}{alias}"
    if detail not in CONTEST_DETAILS:
        raise ValueError(f"unknown contest detail {detail!r}; one of {CONTEST_DETAILS}")
    return f"{TAG_CONTEST}{alias}.{detail}"


def history_prefix(alias: str) -> str:
    """What every alias-history tag key of ``alias`` starts with."""
    return f"{TAG_HISTORY}{alias}."


def history_tag(alias: str, at_ms: int, nonce: str) -> str:
    """The registered-model tag of one move of ``alias`` (one tag per move, so concurrent writers never
    overwrite each other's events; sorted by key they are in time order)."""
    return f"{history_prefix(alias)}{at_ms:0{_HISTORY_MS_DIGITS}d}-{nonce}"


def rolled_back_tag(alias: str) -> str:
    """The model-version tag on a version that ``squeezeflow rollback`` moved ``alias`` away from."""
    return f"{TAG_ROLLED_BACK}{alias}"


def alias_tag_keys(alias: str) -> list[str]:
    """Every tag key squeezeflow builds from ``alias``, each at its longest."""
    return [
        contest_tag(alias),
        *(contest_tag(alias, d) for d in CONTEST_DETAILS),
        history_tag(alias, 10**_HISTORY_MS_DIGITS - 1, "f" * (2 * HISTORY_NONCE_BYTES)),
        rolled_back_tag(alias),
    ]


# The longest alias whose every tag key fits MLflow's limit (and that MLflow accepts as an alias).
MAX_ALIAS_LENGTH = min(
    MLFLOW_MAX_ALIAS_LENGTH, MLFLOW_MAX_REGISTRY_TAG_KEY_LENGTH - max(len(k) for k in alias_tag_keys(""))
)
# No tag key is built from the registered model's name: the registry's own limit is the limit.
MAX_MODEL_NAME_LENGTH = MLFLOW_MAX_MODEL_NAME_LENGTH
