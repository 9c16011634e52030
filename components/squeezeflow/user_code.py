"""Code a job spec names: a model factory, a training entry point, a metric (``package.module:callable``).

Specs are code-bearing by design: whoever may write a spec may run Python as the job's user, exactly as
whoever may write a DAG file may in Airflow (the README's "Trust model"). Two checks narrow what a spec
can reach:

* ``SQUEEZEFLOW_ALLOWED_FACTORIES``, when set, is a comma-separated list of module prefixes (``myteam.models,
  squeezeflow.zoo``); a callable outside them is refused before its module is imported. Platform teams that
  let several teams submit specs set it on their workers.
* A callable from Python's standard library (``os:system``, ``subprocess:run``, ``builtins:eval``) is always
  refused: nothing there builds a model or scores one.

What a factory returns is checked (``checked_module``) before anything else uses it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from squeezeflow.errors import InvalidInputError

ALLOWED_ENV = "SQUEEZEFLOW_ALLOWED_FACTORIES"


def allowed_prefixes() -> list[str] | None:
    """The allow-list from ``SQUEEZEFLOW_ALLOWED_FACTORIES``, or None when it is not set."""
    raw = os.environ.get(ALLOWED_ENV, "").strip()
    return [p.strip().rstrip(".") for p in raw.split(",") if p.strip()] if raw else None


def import_user_callable(
    ref: str, what: str, error: type[InvalidInputError] = InvalidInputError
) -> Callable[..., Any]:
    """The callable ``ref`` (``package.module:callable``) names, as ``what`` (e.g. "model factory");
    ``error`` (an input error, exit 2) says why when it is outside the allow-list, in the standard
    library, not importable, or not callable."""
    module_name, _, attr = ref.partition(":")
    allowed = allowed_prefixes()
    if allowed is not None and not any(
        module_name == prefix or module_name.startswith(prefix + ".") for prefix in allowed
    ):
        raise error(
            f"{what} {ref!r} is not allowed here: {ALLOWED_ENV} allows modules under {allowed} only "
            "(ask the platform team to add yours)"
        )
    if module_name.split(".")[0] in sys.stdlib_module_names | set(sys.builtin_module_names):
        raise error(f"{what} {ref!r} is in Python's standard library, which builds and scores no models")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # an import error of any kind is the user's module, not us
        raise error(f"{what} {ref!r}: cannot import {module_name!r}: {err}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise error(f"{what} {ref!r}: {module_name} has no callable named {attr!r}")
    return fn


def checked_module(value: Any, ref: str, error: type[InvalidInputError] = InvalidInputError) -> Any:
    """``value`` if it is a torch ``nn.Module`` (what a model factory must return), else ``error``."""
    from torch import nn

    if not isinstance(value, nn.Module):
        raise error(
            f"model factory {ref!r} returned {type(value).__name__}, not a torch.nn.Module: a factory must "
            "build the model whose state_dict the spec names"
        )
    return value
