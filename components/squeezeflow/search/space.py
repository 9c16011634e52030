"""What the adaptive search varies, and the recipe a trial's parameters describe.

Both come from the registered passes: each declares its searchable values (``OptimizationPass.searchable``:
name, default domain, the ``search.space`` field that narrows it, when it is searched) and the step it
adds to a searched recipe (``search_steps``, placed by ``search_slot``). Nothing here names a method.
"""

from __future__ import annotations

from typing import Any

from squeezeflow.passes import (
    Categorical,
    FloatRange,
    OptimizationPass,
    Searchable,
    SearchedTrial,
    registry,
)
from squeezeflow.passes.finetune import recovery_epochs
from squeezeflow.passes.searchable import Domain
from squeezeflow.spec.job import JobSpec
from squeezeflow.spec.search import PassStep, Recipe, SearchSpace

__all__ = [
    "Objectives",
    "asked_distributions",
    "distributions",
    "first_trials",
    "pareto_front",
    "recipe_from_params",
    "recovery_epochs",
    "search_space",
    "searchable_values",
    "suggest",
]

# What the study minimises for a trial: (validation-metric drop, MACs, bytes). All three are properties of
# the built model, the same wherever it was built, so the study (and the next round's asks) are too.
Objectives = tuple[float, float, float]


def search_space(job: JobSpec) -> SearchSpace:
    """The space a job searches: its ``search.space``, with what it leaves to the target device filled in
    from the device's profile (``round_to``: the profile's ``channel_multiple`` and its double)."""
    space = job.search.space
    if space.round_to is not None:
        return space
    m = job.target.channel_multiple
    return space.model_copy(update={"round_to": [m, 2 * m] if m > 1 else [1]})


def searchable_values(space: SearchSpace) -> list[tuple[Searchable, Domain]]:
    """Every registered pass's searchable values searched under ``space``, with their narrowed domains,
    in the order the study is asked for them."""
    declared = sorted(
        ((s, cls.name) for cls in registry().values() for s in cls.searchable),
        key=lambda sn: (sn[0].order, sn[1], sn[0].name),
    )
    out = []
    for s, _ in declared:
        domain = s.domain_for(space)
        if domain is not None:
            out.append((s, domain))
    return out


def _distribution(domain: Domain) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(domain, Categorical):
        return CategoricalDistribution(list(domain.choices))
    if isinstance(domain, FloatRange):
        return FloatDistribution(domain.low, domain.high, step=domain.step)
    return IntDistribution(domain.low, domain.high, step=domain.step)


def distributions(space: SearchSpace) -> dict[str, Any]:
    """The study's parameters and their distributions under the spec's search space (conditional ones
    included: a trial carries those it was asked for)."""
    return {s.name: _distribution(domain) for s, domain in searchable_values(space)}


def asked_distributions(params: dict[str, Any], dists: dict[str, Any]) -> dict[str, Any]:
    """Of the study's ``dists``, those of the values a trial was asked for (a conditional value it was
    not asked is left out), in the study's order: what ``optuna.trial.create_trial`` needs to replay it.
    A value the space no longer offers stays unmatched, so the replay refuses that trial."""
    return {name: dist for name, dist in dists.items() if name in params}


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """The parameters of an asked trial (``optuna.Trial``), over `distributions`, asked in order; a
    conditional value only when the values asked before it meet its condition."""
    params: dict[str, Any] = {}
    for s, domain in searchable_values(space):
        if s.when is not None and not s.when(params):
            continue
        if isinstance(domain, Categorical):
            params[s.name] = trial.suggest_categorical(s.name, list(domain.choices))
        elif isinstance(domain, FloatRange):
            params[s.name] = trial.suggest_float(s.name, domain.low, domain.high, step=domain.step)
        else:
            params[s.name] = trial.suggest_int(s.name, domain.low, domain.high, step=domain.step)
    return params


def recipe_from_params(params: dict[str, Any], space: SearchSpace, token_ids: bool = False) -> Recipe:
    """The recipe a search trial's parameters describe: every registered pass's steps for them, in
    ``search_slot`` order, labelled by the passes' parts (for a token-id model: vocabulary pruning,
    recovery, padding trimming, ONNX Runtime's dynamic int8)."""
    trial = SearchedTrial(params=params, space=space, token_ids=token_ids)
    passes: list[type[OptimizationPass]] = sorted(registry().values(), key=lambda c: (c.search_slot, c.name))
    proposed = [step for cls in passes for step in cls.search_steps(trial)]
    return Recipe(
        name="-".join(step.label for step in proposed if step.label),
        steps=[PassStep(name=step.name, params=step.params) for step in proposed],
    )


def first_trials(space: SearchSpace) -> list[dict[str, Any]]:
    """Known-sensible opening trials, from the passes' ``opening`` values (the built-in ones: the
    strongest pruning, then moderate pruning, both with the space's first importance and distillation
    choices, then int8 when the space allows it). As many trials as the longest opening; a shorter one
    repeats its last value. A value without an opening is left to the sampler."""
    openings = {s.name: list(s.opening(domain)) for s, domain in searchable_values(space) if s.opening}
    count = max((len(v) for v in openings.values()), default=0)
    return [{name: v[min(i, len(v) - 1)] for name, v in openings.items() if v} for i in range(count)]


def pareto_front(points: dict[str, Objectives]) -> set[str]:
    """Keys of the points no other point dominates."""

    def dominates(a: Objectives, b: Objectives) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    return {k for k, v in points.items() if not any(dominates(w, v) for j, w in points.items() if j != k)}
