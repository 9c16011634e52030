"""The pass abstraction. A pass turns a model into a new model; a recipe is an ordered list of passes.

Each pass declares its parameters once, as a pydantic ``Config`` (type, default, description): that
is its documentation and its validation. It also declares which values the search may vary and the
step it adds to a searched recipe (``searchable``, ``search_steps``; see ``passes.searchable``): the
search space is built from the registered passes. Heavy imports stay inside ``run``. Passes know
nothing about MLflow, stores or orchestrators.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from squeezeflow.passes.searchable import ProposedStep, Searchable, SearchedTrial
from squeezeflow.recovery import RecoveryCheck
from squeezeflow.training_device import TrainingSetup

ModelKind = Literal["torch", "onnx"]


class PassConfig(BaseModel):
    """Base for a pass's parameters: unknown parameters are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class ModelState:
    """The model as it moves through a recipe: a torch module before export, an ONNX file after."""

    onnx_path: Path | None = None
    torch_module: Any | None = None

    @property
    def kind(self) -> ModelKind:
        return "onnx" if self.torch_module is None else "torch"


@dataclass
class PassContext:
    """What a pass may use besides the model: data, a scratch directory, a seed, a deadline, and where
    its training runs (``training``: the job spec's ``training`` section resolved for this machine)."""

    workdir: Path
    input_shape: list[int]
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    seed: int = 0
    deadline: float | None = None
    teacher: Any | None = None
    baseline_val_metric: float | None = None
    allowed_drop: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    # When recovery training gives a trial up (search.abandon); None: it never does.
    recovery_check: RecoveryCheck | None = None
    training: TrainingSetup = field(default_factory=TrainingSetup)

    def calibration_batches(self, samples: int, batch_size: int = 32) -> Iterator[np.ndarray]:
        """Deterministic, class-mixed calibration samples drawn from the train split."""
        rng = np.random.default_rng(self.seed)
        idx = rng.permutation(len(self.train_x))[:samples]
        for i in range(0, len(idx), batch_size):
            yield self.train_x[idx[i : i + batch_size]]


class OptimizationPass(ABC):
    """One optimization method. Subclasses set ``name``, ``description``, ``input_kind`` and ``Config``."""

    name: ClassVar[str]
    description: ClassVar[str]
    input_kind: ClassVar[ModelKind]
    Config: ClassVar[type[PassConfig]]
    # True for passes that leave the model needing recovery training (pruning, factorisation).
    needs_recovery: ClassVar[bool] = False
    # The values the search may vary for this pass (none: the search never varies it).
    searchable: ClassVar[tuple[Searchable, ...]] = ()
    # Where this pass's step goes in a searched recipe: lower first.
    search_slot: ClassVar[int] = 100

    @classmethod
    def search_steps(cls, trial: SearchedTrial) -> list[ProposedStep]:
        """The steps this pass adds to the recipe a search trial describes (none by default)."""
        return []

    @abstractmethod
    def run(self, model: ModelState, config: Any, ctx: PassContext) -> ModelState:
        """Return the optimized model. Raise ``PassError`` naming the layer when the model is unsupported."""


def require_module(model: ModelState, pass_name: str) -> Any:
    """The model as a trainable ``nn.Module``, or a PassError naming the pass."""
    import torch

    from squeezeflow.errors import PassError

    module = model.torch_module
    if not isinstance(module, torch.nn.Module) or isinstance(module, torch.jit.ScriptModule):
        raise PassError(
            pass_name, "needs a PyTorch nn.Module (format state_dict with a factory, or huggingface)"
        )
    return module


_REGISTRY: dict[str, type[OptimizationPass]] = {}


def register_pass(cls: type[OptimizationPass]) -> type[OptimizationPass]:
    """Class decorator: make a pass available to recipes by its ``name``, and its searchable values to
    the search. A searchable value's name belongs to one pass."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"pass name {cls.name!r} is registered twice")
    owners = {s.name: o.name for o in _REGISTRY.values() if o is not cls for s in o.searchable}
    for s in cls.searchable:
        if s.name in owners:
            raise ValueError(
                f"pass {cls.name!r}: searchable value {s.name!r} is already pass {owners[s.name]!r}'s"
            )
    _REGISTRY[cls.name] = cls
    return cls


def unregister_pass(name: str) -> None:
    """Remove a registered pass (a plugin reloaded in a notebook, a pass a test registered)."""
    _REGISTRY.pop(name, None)


def registry() -> dict[str, type[OptimizationPass]]:
    return dict(_REGISTRY)


def describe_passes() -> list[dict[str, Any]]:
    """Name, description, parameter schema and searchable values of every registered pass (for docs and
    the CLI)."""
    return [
        {
            "name": n,
            "description": c.description,
            "input": c.input_kind,
            "params": c.Config.model_json_schema(),
            "searchable": [{"summary": s.describe(), "description": s.description} for s in c.searchable],
        }
        for n, c in sorted(_REGISTRY.items())
    ]
