"""``search.max_seconds`` is a promise: a searched trial's training ends in time for the trial to be
checked (int8, gate, benchmarks) before the budget runs out, and trials run one after another share the
time left. What checking takes is measured on the job itself: its round-0 trials, which train nothing."""

from __future__ import annotations

import time

import pytest

from squeezeflow.search.rounds import check_seconds, read_plans, read_trial, trial_deadline
from squeezeflow.spec.job import JobSpec
from tests.reliability.conftest import World

pytestmark = pytest.mark.integration


def test_searched_trials_train_only_until_the_budget_leaves_time_to_check_them(world: World) -> None:
    ctx = world.context()
    ing, _, _, _ = world.records()
    (round0,) = read_plans(ing, ctx, before=1)
    recorded = [read_trial(ing, t.recipe, ctx) for t in round0.trials]
    check = check_seconds(ing, ctx, round0)
    assert check == max(r.seconds for r in recorded if r is not None) > 0

    def spec(max_seconds: float) -> JobSpec:
        return world.spec("unused", search={**world.doc["search"], "max_seconds": max_seconds})

    spent = time.time() - round0.started
    budget = spent + 400.0  # 400 s left
    alone = trial_deadline(spec(budget), ing, ctx)
    assert alone == pytest.approx(round0.started + budget - check, abs=0.01)
    first_of_two = trial_deadline(spec(budget), ing, ctx, trials_in_turn=2)
    assert first_of_two == pytest.approx(time.time() + 200.0 - check, abs=2.0)

    # Started after the budget ran out (a retried task, a resumed job): a tenth of the budget, not none.
    late = spent / 2
    assert trial_deadline(spec(late), ing, ctx) == pytest.approx(time.time() + late / 10, abs=2.0)
