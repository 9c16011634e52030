"""What a pass lets the search vary, declared in the pass's own module.

A pass lists its searchable values (``OptimizationPass.searchable``): the study's parameter name, the
domain searched when the job spec says nothing, the ``search.space`` field that narrows it, and when it
is searched at all. It also says which step, if any, it adds to a searched recipe
(``OptimizationPass.search_steps``) and where that step goes (``search_slot``). The search builds the
study's parameters and its recipes from the registered passes alone, so a new method is one module.

Nothing here knows Optuna or the job spec: the spec's ``search.space`` is read by attribute name, so the
passes stay below the spec (which validates recipes against them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class DomainError(ValueError):
    """A ``search.space`` value outside the domain a pass declares for it."""


@dataclass(frozen=True)
class Categorical:
    """One of ``choices``; the spec's list replaces them (in the spec's order)."""

    choices: tuple[Any, ...]

    def narrowed(self, user: Sequence[Any]) -> Categorical:
        outside = [c for c in user if c not in self.choices]
        if outside:
            raise DomainError(f"{outside} not among {list(self.choices)}")
        return Categorical(tuple(user))

    def describe(self) -> str:
        return " | ".join(map(str, self.choices))


@dataclass(frozen=True)
class FloatRange:
    """A float in ``[low, high]`` (on a grid of ``step`` when given); the spec's ``(low, high)`` replaces
    the bounds, the step stays."""

    low: float
    high: float
    step: float | None = None

    def narrowed(self, user: Sequence[float]) -> FloatRange:
        lo, hi = (float(v) for v in user)
        if not self.low <= lo <= hi <= self.high:
            raise DomainError(f"[{lo}, {hi}] not within [{self.low}, {self.high}]")
        return FloatRange(lo, hi, self.step)

    def describe(self) -> str:
        return f"{self.low:g}..{self.high:g}" + (f" step {self.step:g}" if self.step else "")


@dataclass(frozen=True)
class IntRange:
    """An integer in ``[low, high]`` on a grid of ``step``; the spec's ``(low, high)`` replaces the bounds."""

    low: int
    high: int
    step: int = 1

    def narrowed(self, user: Sequence[int]) -> IntRange:
        lo, hi = (int(v) for v in user)
        if not self.low <= lo <= hi <= self.high:
            raise DomainError(f"[{lo}, {hi}] not within [{self.low}, {self.high}]")
        return IntRange(lo, hi, self.step)

    def describe(self) -> str:
        return f"{self.low}..{self.high}" + (f" step {self.step}" if self.step != 1 else "")


Domain = Categorical | FloatRange | IntRange


@dataclass(frozen=True)
class Searchable:
    """One value the search may vary.

    ``name`` is the study's parameter name: stored trial records carry it, so it is never renamed.
    ``order`` is where the study is asked for it among every pass's values (lower first); the order is
    part of what makes a seeded search reproducible, so an existing value keeps its number.
    """

    name: str
    domain: Domain
    order: int
    description: str = ""
    narrowed_by: str | None = None  # the search.space field whose value replaces the domain
    enabled_by: str | None = None  # a search.space flag that must be true for the value to be searched
    # Asked only when the values asked before it satisfy this (a define-by-run condition).
    when: Callable[[Mapping[str, Any]], bool] | None = field(default=None, compare=False)
    # Its values in the search's opening trials, from the searched domain: one per opening trial, or
    # one for all of them. None leaves it to the sampler.
    opening: Callable[[Domain], Sequence[Any]] | None = field(default=None, compare=False)

    def domain_for(self, space: Any) -> Domain | None:
        """The domain searched under ``space`` (the spec's ``search.space``), or None when it is not
        searched there. A field ``space`` lacks leaves the default domain."""
        if self.enabled_by is not None and not getattr(space, self.enabled_by, False):
            return None
        user = getattr(space, self.narrowed_by, None) if self.narrowed_by else None
        if user is None:
            return self.domain
        try:
            return self.domain.narrowed(user)
        except DomainError as err:
            raise DomainError(f"search.space.{self.narrowed_by} for {self.name!r}: {err}") from None

    def describe(self) -> str:
        """One line for people: name, default domain, and what narrows or gates it."""
        notes = [f"search.space.{f}" for f in (self.narrowed_by,) if f]
        if self.enabled_by:
            notes.append(f"only with search.space.{self.enabled_by}")
        if self.when is not None:
            notes.append("conditional")
        return f"{self.name}: {self.domain.describe()}" + (f" ({'; '.join(notes)})" if notes else "")


def first_choice(domain: Domain) -> list[Any]:
    """An ``opening``: the searched domain's first choice (the spec lists its preferred one first)."""
    if not isinstance(domain, Categorical):
        raise TypeError(f"first_choice needs a Categorical domain, not {type(domain).__name__}")
    return [domain.choices[0]]


@dataclass(frozen=True)
class SearchedTrial:
    """What a pass sees when it adds its step to a searched recipe: every pass's values for the trial,
    the spec's ``search.space``, and whether the model takes token ids (a text model)."""

    params: Mapping[str, Any]
    space: Any
    token_ids: bool = False


@dataclass(frozen=True)
class ProposedStep:
    """A step of a searched recipe: the pass's registered name, its parameters, and its part of the
    recipe's label."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""
