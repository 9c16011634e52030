"""A method is one module: a pass declares its searchable values and its step, and the search offers
them without being told about the pass."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from pydantic import Field

from squeezeflow.passes import (
    Categorical,
    FloatRange,
    IntRange,
    ModelState,
    OptimizationPass,
    PassConfig,
    PassContext,
    ProposedStep,
    Searchable,
    SearchedTrial,
    describe_passes,
    first_choice,
    register_pass,
    unregister_pass,
    validate_steps,
)
from squeezeflow.search.space import (
    asked_distributions,
    distributions,
    first_trials,
    recipe_from_params,
    suggest,
)
from squeezeflow.spec.search import SearchSpace


class WeightClipConfig(PassConfig):
    percentile: float = Field(default=99.9, gt=50, le=100)
    passes: int = Field(default=1, ge=1, le=4)


class WeightClip(OptimizationPass):
    """A made-up method: clip weights at a percentile, sometimes more than once after pruning."""

    name = "weight_clip"
    description = "Clip weights at a percentile (test pass)."
    input_kind = "torch"
    Config = WeightClipConfig
    searchable = (
        Searchable("clip_percentile", Categorical((99.0, 99.9, 100.0)), order=60, opening=first_choice),
        Searchable(
            "clip_passes",
            IntRange(1, 3),
            order=61,
            when=lambda asked: float(asked["prune_ratio"]) > 0,
        ),
        Searchable("clip_lr_scale", FloatRange(0.5, 2.0, step=0.5), order=62, enabled_by="clip_lr"),
    )
    search_slot = 35  # after recovery, before padding trimming and export

    @classmethod
    def search_steps(cls, trial: SearchedTrial) -> list[ProposedStep]:
        percentile = trial.params["clip_percentile"]
        if percentile >= 100:
            return []
        params = {"percentile": percentile, "passes": trial.params.get("clip_passes", 1)}
        return [ProposedStep(cls.name, params, f"clip{percentile:g}")]

    def run(self, model: ModelState, config: Any, ctx: PassContext) -> ModelState:
        return model


@pytest.fixture
def weight_clip() -> Iterator[type[OptimizationPass]]:
    register_pass(WeightClip)
    yield WeightClip
    unregister_pass(WeightClip.name)


def _asked(space: SearchSpace, seed: int = 3) -> dict[str, Any]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return suggest(study.ask(), space)


def test_a_registered_pass_is_searched_and_builds_its_step_without_touching_the_search(
    weight_clip: type[OptimizationPass],
) -> None:
    space = SearchSpace(prune_ratio=(0.5, 0.5), quantize=["int8"], distill=[False])
    assert list(distributions(space)) == [
        "prune_ratio",
        "importance",
        "round_to",
        "distill",
        "quantize",
        "int4_block_size",
        "clip_percentile",
        "clip_passes",
    ]
    assert distributions(space)["clip_percentile"] == optuna.distributions.CategoricalDistribution(
        [99.0, 99.9, 100.0]
    )
    params = {**_asked(space), "round_to": 1, "clip_percentile": 99.9, "clip_passes": 2}
    recipe = recipe_from_params(params, space)
    assert [s.name for s in recipe.steps] == [
        "structured_prune",
        "finetune",
        "weight_clip",
        "ort_static_int8",
    ]
    assert recipe.steps[2].params == {"percentile": 99.9, "passes": 2}
    assert recipe.name == f"prune50-{params['importance']}-ft-clip99.9-int8"
    validate_steps(recipe.steps)  # the recipe the search would build is a valid one
    assert recipe_from_params({**params, "clip_percentile": 100.0}, space).name == (
        f"prune50-{params['importance']}-ft-int8"
    )
    # the search opens with its choice too (and still with strong, moderate, then light pruning)
    opening = first_trials(SearchSpace())
    assert [(t["prune_ratio"], t["clip_percentile"]) for t in opening] == [
        (0.85, 99.0),
        (0.6, 99.0),
        (0.3, 99.0),
    ]
    listed = {p["name"]: [s["summary"] for s in p["searchable"]] for p in describe_passes()}
    assert listed["weight_clip"][0] == "clip_percentile: 99.0 | 99.9 | 100.0"
    assert "conditional" in listed["weight_clip"][1]


def test_a_conditional_value_is_asked_only_when_its_condition_holds_and_replays(
    weight_clip: type[OptimizationPass],
) -> None:
    unpruned = SearchSpace(prune_ratio=(0.0, 0.0))
    asked = _asked(unpruned)
    assert "clip_percentile" in asked
    assert "clip_passes" not in asked
    # the next round rebuilds its study from the stored parameters: a trial without the value replays
    trial = optuna.trial.create_trial(
        params=asked,
        distributions=asked_distributions(asked, distributions(unpruned)),
        values=[0.1],
    )
    assert set(trial.params) == set(asked)
    assert 1 <= _asked(SearchSpace(prune_ratio=(0.3, 0.3)))["clip_passes"] <= 3


def test_a_value_gated_by_a_spec_flag_the_spec_lacks_is_not_searched(
    weight_clip: type[OptimizationPass],
) -> None:
    assert "clip_lr_scale" not in distributions(SearchSpace())
    gated = WeightClip.searchable[2]
    assert gated.domain_for(SimpleNamespace(clip_lr=True)) == FloatRange(0.5, 2.0, step=0.5)


def test_a_spec_range_outside_a_pass_domain_is_refused_naming_the_field() -> None:
    prune_ratio = Searchable("prune_ratio", FloatRange(0.0, 0.95, step=0.05), order=10, narrowed_by="r")
    assert prune_ratio.domain_for(SimpleNamespace(r=(0.2, 0.4))) == FloatRange(0.2, 0.4, step=0.05)
    with pytest.raises(ValueError, match=r"search.space.r for 'prune_ratio'"):
        prune_ratio.domain_for(SimpleNamespace(r=(0.2, 0.99)))
    choice = Searchable("importance", Categorical(("magnitude", "taylor")), order=20, narrowed_by="imp")
    with pytest.raises(ValueError, match="'random'"):
        choice.domain_for(SimpleNamespace(imp=["random"]))


def test_two_passes_cannot_declare_the_same_searchable_value() -> None:
    class Imposter(WeightClip):
        name = "weight_clip_imposter"
        searchable = (Searchable("prune_ratio", FloatRange(0.0, 0.5), order=10),)

    with pytest.raises(ValueError, match="already pass 'structured_prune'"):
        register_pass(Imposter)
    assert "weight_clip_imposter" not in {p["name"] for p in describe_passes()}


@pytest.mark.parametrize("bounds", [(0.6, 0.85), (0.3, 0.9), (0.55, 0.6), (0.1, 0.42)])
def test_the_opening_prune_ratios_lie_on_the_studys_grid(bounds: tuple[float, float]) -> None:
    space = SearchSpace(prune_ratio=bounds)
    grid = distributions(space)["prune_ratio"]
    for trial in first_trials(space):
        ratio = trial["prune_ratio"]
        assert grid.low <= ratio <= grid.high
        assert abs((ratio - grid.low) / grid.step - round((ratio - grid.low) / grid.step)) < 1e-6, ratio
