"""What a promotion leaves in the registry besides the alias: a bounded alias history and descriptions.

What the test proves, through a real MLflow server: the alias history keeps only the newest
``registry.history_limit`` moves (older registered-model tags are deleted after each promotion and
rollback), and rollback still goes back one move per command from what is kept, and refuses when
nothing before is kept; a promoted version's description gives its recipe, metric, size and speed
against the baseline and the job's run; the registered model gets a description from the job (or the
spec's ``registry.description``), replaced when squeezeflow's text changes, never when a person wrote
it.
"""

from __future__ import annotations

import uuid

import pytest
from mlflow import MlflowClient

from squeezeflow.errors import InvalidInputError
from squeezeflow.results import CandidateOutcome
from squeezeflow.stages.promote import promote
from squeezeflow.tracking.registry_tags import TAG_DESCRIPTION_SHA256, history_prefix
from squeezeflow.tracking.tracker import Tracker
from tests.reliability.conftest import World
from tests.servers import MlflowServer

pytestmark = pytest.mark.integration


def _p50(o: CandidateOutcome) -> float:
    return o.benchmarks[0].p50_ms


def _registry(name: str, **fields: object) -> dict[str, object]:
    return {"registry": {"model_name": name, "alias": "champion", **fields}}


def test_the_alias_history_keeps_its_newest_moves_and_rollback_still_goes_back_one_move(
    world: World, mlflow_server: MlflowServer, one_at_a_time: None
) -> None:
    uri = mlflow_server.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    tracker = Tracker(uri, None)
    ctx = world.context()
    _, base, target, outcomes = world.records()
    slow, fast = sorted(outcomes, key=_p50, reverse=True)
    name = f"history-{uuid.uuid4().hex[:6]}"
    spec = world.spec(name, **_registry(name, history_limit=1))

    def history_tags() -> list[str]:
        tags = client.get_registered_model(name).tags
        return sorted(k for k in tags if k.startswith(history_prefix("champion")))

    def champion() -> str:
        return str(client.get_model_version_by_alias(name, "champion").version)

    first = promote(spec, world.another_job(ctx, f"{name}-1"), base, target, [slow], ctx)
    second = promote(spec, world.another_job(ctx, f"{name}-2"), base, target, [fast], ctx)
    assert (first.version, second.version) == ("1", "2"), second.reason
    assert len(history_tags()) == 1, "the promotion deleted the entry beyond the limit"

    assert tracker.rollback_alias(name, "champion").to_version == "1", "back one move from what is kept"
    for to in ("2", "1", "2", "1", "2"):  # back and forth, as a person trying versions would
        tracker.rollback_alias(name, "champion", to_version=to)
        assert len(history_tags()) == 1, f"after moving to {to}"
    assert champion() == "2"
    back = tracker.rollback_alias(name, "champion")
    assert (back.from_version, back.to_version) == ("2", "1")
    assert champion() == "1"
    with pytest.raises(InvalidInputError, match="records no version before it"):
        tracker.rollback_alias(name, "champion")
    assert champion() == "1" and len(history_tags()) == 1


def test_a_promotion_describes_the_version_and_the_model_but_never_overwrites_a_persons_description(
    world: World, mlflow_server: MlflowServer, one_at_a_time: None
) -> None:
    uri = mlflow_server.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    ctx = world.context()
    _, base, target, outcomes = world.records()
    slow, fast = sorted(outcomes, key=_p50, reverse=True)
    name = f"described-{uuid.uuid4().hex[:6]}"
    spec = world.spec(name)

    job1 = world.another_job(ctx, f"{name}-1")
    first = promote(spec, job1, base, target, [slow], ctx)
    assert first.promoted, first.reason
    version = client.get_model_version(name, first.version).description
    assert f"**{slow.candidate.label}**" in version and "`ort_static_int8(calibration_samples=" in version
    assert "top1_accuracy" in version and "x smaller than the baseline" in version, version
    assert f"x faster p50 on `{target.profile}`" in version and job1.parent_run_id in version, version
    model = client.get_registered_model(name)
    assert f"squeezeflow job `{world.doc['name']}`" in model.description, model.description
    assert "`top1_accuracy`" in model.description and "absolute tolerance 0.05" in model.description
    assert model.tags[TAG_DESCRIPTION_SHA256]

    by_hand = "Owned by the vision team; ask in #vision before deploying."
    client.update_registered_model(name, by_hand)
    second = promote(spec, world.another_job(ctx, f"{name}-2"), base, target, [fast], ctx)
    assert second.promoted, second.reason
    assert client.get_registered_model(name).description == by_hand

    # The spec's own text, replaced when the spec changes it: it is squeezeflow's, not a person's edit.
    other = f"described-{uuid.uuid4().hex[:6]}"
    told = world.spec(other, **_registry(other, description="Animal classifier, int8."))
    assert promote(told, world.another_job(ctx, f"{other}-1"), base, target, [slow], ctx).promoted
    assert client.get_registered_model(other).description == "Animal classifier, int8."
    retold = world.spec(other, **_registry(other, description="Animal classifier for the kiosk."))
    assert promote(retold, world.another_job(ctx, f"{other}-2"), base, target, [fast], ctx).promoted
    assert client.get_registered_model(other).description == "Animal classifier for the kiosk."
