"""The recipes the search asks for stay the same for the same seed and spec.

Stored trial records name the study's parameters, and every front door replays the same study from
them (test_same_search_on_every_front_door): the parameter names, the order the study is asked for
them, and the recipe each set of parameters describes are pinned here against recipes recorded from
the search before the passes declared their own searchable values (data/search_space_pins.json).
Regenerate only on purpose: ``python tests/unit/test_search_space_pins.py``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import optuna

from squeezeflow.search.space import (
    asked_distributions,
    distributions,
    first_trials,
    recipe_from_params,
    suggest,
)
from squeezeflow.spec.search import SearchSpace

PINS = Path(__file__).parent / "data" / "search_space_pins.json"
TRIALS = 12
REPLAYED = 4

CASES: dict[str, tuple[dict[str, Any], bool]] = {
    "image-default": ({}, False),
    "image-narrowed-lowrank": (
        {
            "prune_ratio": (0.0, 0.6),
            "importance": ["taylor", "magnitude"],
            "distill": [True],
            "quantize": ["none", "int8_accuracy_aware", "int8"],
            "lowrank": True,
            "finetune_epochs": 3,
            "max_recovery_scale": 2.0,
            "round_to": [8, 16, 1],
        },
        False,
    ),
    "text-lowrank": (
        {"prune_ratio": (0.1, 0.5), "quantize": ["int8", "none"], "lowrank": True, "finetune_lr": 5e-5},
        True,
    ),
}


def _objectives(params: dict[str, Any]) -> list[float]:
    """A made-up but deterministic result for a trial, so the sampler leaves its startup trials."""
    ratio = float(params["prune_ratio"])
    drop = ratio**2 / 4 + (0.0 if params["distill"] else 0.01) + 0.02 * float(params.get("lowrank_ratio", 0))
    size = (1 - ratio) ** 2 * (0.3 if params["quantize"] != "none" else 1.0)
    return [drop, (1 - ratio) ** 2, size]


def _study(seed: int) -> Any:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=3, constant_liar=True)
    return optuna.create_study(directions=["minimize"] * 3, sampler=sampler)


def _ask(study: Any, space: SearchSpace, token_ids: bool) -> dict[str, Any]:
    trial = study.ask()
    params = suggest(trial, space)
    recipe = recipe_from_params(params, space, token_ids)
    study.tell(trial, _objectives(params))
    return {"params": params, "asked_order": list(trial.params), "recipe": recipe.model_dump(mode="json")}


def asked_recipes(space_fields: dict[str, Any], token_ids: bool, seed: int = 7) -> dict[str, Any]:
    """What a fresh study over ``space`` asks for, told each trial's result before the next ask (the
    sampler and its settings as the search rounds use them); then what a new study asks once those
    trials are replayed into it from their parameters, as the next search round rebuilds its study
    from the stored trial records."""
    space = SearchSpace(**space_fields)
    study = _study(seed)
    for params in first_trials(space):
        study.enqueue_trial(params)
    trials = [_ask(study, space, token_ids) for _ in range(TRIALS)]
    replay = _study(seed + 1)
    dists = distributions(space)
    for t in trials:
        replay.add_trial(
            optuna.trial.create_trial(
                params=t["params"],
                distributions=asked_distributions(t["params"], dists),
                values=_objectives(t["params"]),
            )
        )
    return {
        "distributions": {k: repr(v) for k, v in dists.items()},
        "first_trials": first_trials(space),
        "trials": trials,
        "after_replay": [_ask(replay, space, token_ids) for _ in range(REPLAYED)],
    }


def current() -> dict[str, Any]:
    return {name: asked_recipes(fields, token_ids) for name, (fields, token_ids) in CASES.items()}


def test_the_same_seed_and_spec_ask_for_the_same_recipes() -> None:
    pinned = json.loads(PINS.read_text())
    now = json.loads(json.dumps(current()))
    for name in CASES:
        assert now[name]["distributions"] == pinned[name]["distributions"], name
        assert now[name]["first_trials"] == pinned[name]["first_trials"], name
        for part in ("trials", "after_replay"):
            for i, (got, want) in enumerate(zip(now[name][part], pinned[name][part], strict=True)):
                assert got == want, f"{name}, {part} {i}"


if __name__ == "__main__":
    PINS.write_text(json.dumps(current(), indent=1) + "\n")
    sys.stdout.write(f"wrote {PINS}\n")
