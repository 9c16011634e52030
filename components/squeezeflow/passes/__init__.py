"""Optimization passes. Importing this package registers every built-in pass."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from squeezeflow.passes import depth as _depth  # noqa: F401  (registers passes)
from squeezeflow.passes import finetune as _finetune  # noqa: F401
from squeezeflow.passes import lowrank as _lowrank  # noqa: F401
from squeezeflow.passes import ort_int4 as _ort_int4  # noqa: F401
from squeezeflow.passes import ort_quantize as _ort_quantize  # noqa: F401
from squeezeflow.passes import prune as _prune  # noqa: F401
from squeezeflow.passes import text as _text  # noqa: F401
from squeezeflow.passes.base import (
    ModelState,
    OptimizationPass,
    PassConfig,
    PassContext,
    describe_passes,
    register_pass,
    registry,
    unregister_pass,
)
from squeezeflow.passes.searchable import (
    Categorical,
    FloatRange,
    IntRange,
    ProposedStep,
    Searchable,
    SearchedTrial,
    first_choice,
)

__all__ = [
    "Categorical",
    "FloatRange",
    "IntRange",
    "ModelState",
    "OptimizationPass",
    "PassConfig",
    "PassContext",
    "ProposedStep",
    "Searchable",
    "SearchedTrial",
    "describe_passes",
    "first_choice",
    "get_pass",
    "register_pass",
    "registry",
    "unregister_pass",
    "validate_steps",
]


def get_pass(name: str) -> type[OptimizationPass]:
    passes = registry()
    if name not in passes:
        raise KeyError(f"unknown pass {name!r}; registered passes: {sorted(passes)}")
    return passes[name]


def validate_steps(steps: list[Any]) -> None:
    """Check that every step names a registered pass with valid params, and that torch passes come
    before ONNX passes (a recipe cannot go back from ONNX to torch)."""
    seen_onnx = False
    pending_recovery: str | None = None
    for i, step in enumerate(steps):
        try:
            cls = get_pass(step.name)
        except KeyError as err:
            raise ValueError(f"step {i}: {err.args[0]}") from None
        try:
            cls.Config.model_validate(step.params)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise ValueError(f"step {i} ({step.name}): invalid params: {problems}") from None
        if cls.input_kind == "torch" and seen_onnx:
            raise ValueError(f"step {i} ({step.name}) works on torch models but comes after an ONNX pass")
        if cls.name == "finetune":
            pending_recovery = None
        elif cls.needs_recovery:
            pending_recovery = f"step {i} ({step.name})"
        elif cls.input_kind == "onnx" and pending_recovery:
            break
        seen_onnx = seen_onnx or cls.input_kind == "onnx"
    if pending_recovery:
        raise ValueError(
            f"{pending_recovery} must be followed by a finetune step before export: "
            "a pruned or factorised model is not worth evaluating without recovery training"
        )
