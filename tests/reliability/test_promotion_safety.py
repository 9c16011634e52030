"""Promotion trusts only gate evidence that is this candidate's, this baseline's, this dataset's and
this job's, as the gate stage recorded it in the artifact store, and only a candidate that is what the
optimize stage recorded, with a model that finished logging (nothing partial is ever registered).

Table-driven: each case hands `promote` a real eligible candidate whose evidence was damaged in one
way (gate record missing from the store, failed, edited after the fact, belonging to another
candidate, baseline or dataset, or judged against another tolerance; the candidate pointing at another
model than recorded, or at a LoggedModel that never finished). What each case proves: promotion
refuses it with a reason that names the problem, and nothing reaches the registry (no registered
model, no version, no alias). The control case proves the same candidate with its own evidence is
promoted.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from mlflow import MlflowClient

from squeezeflow.results import CandidateOutcome, content_key
from squeezeflow.stages import StageContext
from squeezeflow.stages.promote import promote
from tests.reliability.conftest import World
from tests.servers import MlflowServer

pytestmark = pytest.mark.integration

Forge = Callable[[CandidateOutcome, CandidateOutcome, StageContext], CandidateOutcome]


def _with_gate(
    o: CandidateOutcome, ctx: StageContext | None, stored: dict | None = None, **carried: object
) -> CandidateOutcome:
    """``o`` carrying a gate verdict changed by ``carried`` under a fresh key; the store holds
    ``stored`` changes under that key (the gate stage's record), or nothing when ``ctx`` is None."""
    key = content_key("forged-gate", uuid.uuid4().hex)
    gate = o.gate.model_copy(update={"key": key, **carried})
    if ctx is not None:
        ctx.store.write_record("gate", key, o.gate.model_copy(update={"key": key, **(stored or carried)}))
    return o.model_copy(update={"gate": gate})


def _with_unfinished_model(o: CandidateOutcome, ctx: StageContext) -> CandidateOutcome:
    """``o`` as if its model had been logged by a worker that died half-way: its records (written as
    the stages would) point at a LoggedModel that never finished."""
    pending = ctx.tracker.client.create_logged_model(ctx.tracker.experiment_id, name="candidate")
    key = content_key("forged-candidate", uuid.uuid4().hex)
    candidate = o.candidate.model_copy(update={"key": key, "model_id": pending.model_id})
    ctx.store.write_record("optimize", key, candidate)
    forged = o.model_copy(update={"candidate": candidate})
    return _with_gate(forged, ctx, candidate_key=key)


@dataclass(frozen=True)
class Case:
    id: str
    forge: Forge
    reason: str  # regex on the promotion's reason


CASES = [
    Case(
        "gate-record-missing",
        lambda o, other, ctx: _with_gate(o, None),
        r"its gate record gate/\w+ is missing from the artifact store",
    ),
    Case(
        "gate-record-failed",
        lambda o, other, ctx: _with_gate(o, ctx, passed=False, reason="drop exceeds the allowed 0.05"),
        r"failed the gate: drop exceeds the allowed 0\.05",
    ),
    Case(
        "verdict-edited-to-passed",
        lambda o, other, ctx: _with_gate(o, ctx, stored={"passed": False}, passed=True),
        r"its gate verdict differs from the gate record gate/\w+ in the artifact store",
    ),
    Case(
        "gate-record-of-another-candidate",
        lambda o, other, ctx: o.model_copy(update={"gate": other.gate}),
        r"gate evidence belongs to a different candidate",
    ),
    Case(
        "gate-record-of-another-baseline",
        lambda o, other, ctx: _with_gate(o, ctx, baseline_sha256="0" * 64),
        r"gate evidence belongs to a different baseline or dataset",
    ),
    Case(
        "gate-record-of-another-dataset",
        lambda o, other, ctx: _with_gate(o, ctx, dataset_sha256="0" * 64),
        r"gate evidence belongs to a different baseline or dataset",
    ),
    Case(
        "candidate-edited-to-another-model",
        lambda o, other, ctx: o.model_copy(
            update={"candidate": o.candidate.model_copy(update={"model_id": other.candidate.model_id})}
        ),
        r"its candidate differs from the optimize record optimize/\w+ in the artifact store",
    ),
    Case(
        "model-never-finished-logging",
        lambda o, other, ctx: _with_unfinished_model(o, ctx),
        r"its MLflow model m-\w+ did not finish logging",
    ),
    Case(
        "gate-record-under-another-tolerance",
        lambda o, other, ctx: _with_gate(o, ctx, allowed_drop=0.5),
        r"its gate verdict allowed a drop of 0\.5000, not this job's 0\.0500",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_promotion_refuses_a_candidate_whose_evidence_cannot_be_trusted(
    case: Case, world: World, mlflow_server: MlflowServer, one_at_a_time: None
) -> None:
    ctx = world.context()
    ing, base, target, (mine, other) = world.records()
    name = f"refuse-{case.id}-{uuid.uuid4().hex[:6]}"
    result = promote(world.spec(name), ing, base, target, [case.forge(mine, other, ctx)], ctx)

    assert not result.promoted, result.reason
    assert re.search(case.reason, result.reason), result.reason
    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri)
    assert client.search_registered_models(f"name = '{name}'") == [], "the registry changed"


def test_the_same_candidate_with_its_own_gate_record_is_promoted(
    world: World, mlflow_server: MlflowServer, one_at_a_time: None
) -> None:
    ctx = world.context()
    ing, base, target, (mine, _) = world.records()
    name = f"refuse-control-{uuid.uuid4().hex[:6]}"
    result = promote(world.spec(name), ing, base, target, [mine], ctx)
    assert result.promoted and result.version == "1", result.reason
