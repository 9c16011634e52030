"""A trial whose recovery cannot reach the gate is abandoned (search.abandon), through the candidate policy
every front door calls: recorded and tracked as abandoned, never gated or benchmarked, told to the study
as pruned; a trial that recovers is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from squeezeflow.results import BaselineResult, IngestResult
from squeezeflow.search.policy import run_trial, verdict_of
from squeezeflow.search.rounds import read_trial, told_state
from squeezeflow.spec.job import JobSpec
from squeezeflow.spec.load import parse_spec
from squeezeflow.spec.search import PassStep, Recipe
from squeezeflow.stages import Settings, StageContext, baseline, ingest
from tests.reference import job_doc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> StageContext:
    tmp = tmp_path_factory.mktemp("abandon")
    return StageContext.open(
        Settings(artifacts=str(tmp / "a"), tracking_uri=f"sqlite:///{tmp / 'm.db'}", workdir=tmp / "w"),
        "abandon",
    )


@pytest.fixture(scope="module")
def job(
    ctx: StageContext, tiny_model: Path, small_data: Path
) -> tuple[JobSpec, IngestResult, BaselineResult]:
    """A searched job whose recovery rate does not train: every searched trial is hopeless (the tests
    with recipes of their own run them through the same policy)."""
    doc = job_doc(tiny_model, small_data, name="abandon")
    doc["search"] = {
        "max_trials": 8,
        "seed": 0,
        "parallel_trials": 1,
        "space": {
            "prune_ratio": [0.8, 0.9],
            "distill": [False],
            "quantize": ["none"],
            "finetune_epochs": 2,
            "max_recovery_scale": 1,
            "finetune_lr": 1e-6,
            "round_to": [1],  # the tiny CNN's widths rounded to 8 would not be pruned at all
        },
    }
    spec = parse_spec(doc)
    ing = ingest(spec, ctx)
    return spec, ing, baseline(spec, ing, ctx)


def _recipe(name: str, ratio: float, **finetune: Any) -> Recipe:
    return Recipe(
        name=name,
        steps=[
            PassStep(name="structured_prune", params={"ratio": ratio}),
            PassStep(name="finetune", params={"batch_size": 128, **finetune}),
        ],
    )


def test_a_trial_that_cannot_recover_is_abandoned_at_its_first_check_and_never_gated(
    ctx: StageContext, job: tuple[JobSpec, IngestResult, BaselineResult]
) -> None:
    spec, ing, base = job
    # Pruned by 90% and fine-tuned at a rate that does not train: validation stays at chance.
    outcome = run_trial(spec, ing, base, _recipe("prune90-crippled", 0.9, epochs=4, lr=1e-6), ctx)
    cand = outcome.candidate
    assert cand.status == "abandoned" and verdict_of(outcome) == "abandoned"
    assert cand.error is not None and cand.error.startswith("abandoned after recovery epoch 2 of 4")
    why = cand.notes["abandoned"]
    assert why["epoch"] == 2 and why["gap"] > 0.5 and why["seconds_saved"] > 0
    assert cand.onnx is None and cand.val_metric is None
    # never gated (no held-out sample scored) nor benchmarked
    assert not outcome.gate.passed and outcome.gate.n == 0 and outcome.benchmarks == []
    assert "not gated: abandoned after" in outcome.gate.reason
    tags = ctx.tracker.run_tags(cand.run_id)
    assert tags["squeezeflow.status"] == "abandoned"
    assert tags["squeezeflow.error"].startswith("abandoned after recovery epoch 2 of 4")
    assert ctx.tracker.client.get_run(cand.run_id).info.status == "KILLED"
    import optuna

    record = read_trial(ing, cand.recipe, ctx)
    assert record is not None and record.objectives is None
    assert told_state(record) == optuna.trial.TrialState.PRUNED


def test_a_trial_that_recovers_is_not_abandoned(
    ctx: StageContext, job: tuple[JobSpec, IngestResult, BaselineResult]
) -> None:
    spec, ing, base = job
    # The tiny CNN pruned by 10% falls to ~37% and climbs back (~65%, 79%, 84%, 88%): far below the
    # floor at the first check, but climbing fast.
    outcome = run_trial(spec, ing, base, _recipe("prune10-ft", 0.1, epochs=4, lr=3e-3), ctx)
    cand = outcome.candidate
    assert cand.status == "ok", cand.error
    assert cand.notes["finetune"]["stopped"] != "abandoned" and "abandoned" not in cand.notes
    assert cand.notes["finetune"]["epochs_run"] == 4


def test_the_search_goes_on_after_an_abandoned_trial_and_its_study_is_told_it_was_pruned(
    ctx: StageContext, job: tuple[JobSpec, IngestResult, BaselineResult]
) -> None:
    import optuna

    from squeezeflow.search.rounds import plan_round

    spec, ing, base = job
    plan_round(spec, ing, 0, ctx)  # round 0's cheap trials are not needed here
    first = plan_round(spec, ing, 1, ctx)
    assert len(first.trials) == 1
    outcome = run_trial(spec, ing, base, first.trials[0].recipe, ctx)
    assert outcome.candidate.status == "abandoned", outcome.candidate.notes
    record = read_trial(ing, first.trials[0].recipe, ctx)
    assert told_state(record) == optuna.trial.TrialState.PRUNED
    second = plan_round(spec, ing, 2, ctx)
    assert second.stop is None and len(second.trials) == 1
    assert second.trials[0].recipe.key() != first.trials[0].recipe.key()
