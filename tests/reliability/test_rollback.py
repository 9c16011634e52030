"""Rolling an alias back with one command, recorded in the registry's history.

What the test proves: promotions move the alias only to a better version (a slower candidate from
another job loses to the holder and records it); `squeezeflow rollback` moves the alias back to the
version it held before the last promotion and records the move in the registered model's alias
history; a retried promotion never undoes the rollback, and the rolled-back version is not promoted
again by a later job; rolling back past the first promotion is refused with a message (exit 2);
`--to VERSION` moves the alias to a named version.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from squeezeflow.results import CandidateOutcome, content_key
from squeezeflow.stages.promote import promote
from squeezeflow.tracking.tracker import Tracker
from tests.reliability.conftest import World
from tests.servers import MlflowServer

pytestmark = pytest.mark.integration

SQUEEZEFLOW = str(Path(sys.executable).with_name("squeezeflow"))


def _p50(o: CandidateOutcome) -> float:
    return o.benchmarks[0].p50_ms


def test_rollback_moves_the_alias_back_one_promotion_per_command_and_records_it(
    world: World, mlflow_server: MlflowServer, one_at_a_time: None
) -> None:
    uri = mlflow_server.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    ctx = world.context()
    _, base, target, outcomes = world.records()
    slow, fast = sorted(outcomes, key=_p50, reverse=True)
    assert _p50(slow) > _p50(fast), "the two candidates measured the same: nothing to rank"
    name = f"rollback-{uuid.uuid4().hex[:6]}"
    spec = world.spec(name)

    def champion() -> str:
        return str(client.get_model_version_by_alias(name, "champion").version)

    def rollback(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SQUEEZEFLOW, "rollback", name, "--alias", "champion", "--tracking-uri", uri, *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    first = promote(spec, world.another_job(ctx, f"{name}-1"), base, target, [slow], ctx)
    job2 = world.another_job(ctx, f"{name}-2")
    second = promote(spec, job2, base, target, [fast], ctx)
    assert (first.version, second.version, second.previous_version) == ("1", "2", "1"), second.reason
    worse = promote(spec, world.another_job(ctx, f"{name}-3"), base, target, [slow], ctx)
    assert not worse.promoted and worse.lost_to == "2" and champion() == "2", worse.reason
    assert "is as good or better on latency" in worse.reason, worse.reason

    back = rollback()
    assert back.returncode == 0, back.stderr
    assert "version 2 -> version 1" in back.stdout
    assert champion() == "1"
    history = Tracker(uri, None).alias_history(name, "champion")
    assert [(m.kind, m.from_version, m.to_version) for m in history] == [
        ("promote", None, "1"),
        ("promote", "1", "2"),
        ("rollback", "2", "1"),
    ]
    assert "squeezeflow.rolled_back.champion" in client.get_model_version(name, "2").tags

    # the second job's promotion retried after losing its record: it reports what it decided then and
    # leaves the alias where the rollback put it
    key = content_key(
        "promote", job2.job_key, name, "champion", spec.objective, f"{fast.candidate.key}:{fast.gate.key}"
    )
    assert second.key == key
    (Path(world.settings.artifacts) / "records" / "promote" / f"{key}.json").unlink()
    retried = promote(spec, job2, base, target, [fast], ctx)
    assert retried.promoted and retried.version == "2" and champion() == "1"
    # a later job whose best candidate is the rolled-back one does not promote it again
    later = promote(spec, world.another_job(ctx, f"{name}-4"), base, target, [fast], ctx)
    assert not later.promoted and "was rolled back from @champion" in later.reason, later.reason
    assert champion() == "1"

    refused = rollback()
    assert refused.returncode == 2, refused.stderr
    assert "records no version before it; name the version to go back to with --to VERSION" in " ".join(
        refused.stderr.split()
    ), refused.stderr
    assert champion() == "1"

    forward = rollback("--to", "2")
    assert forward.returncode == 0, forward.stderr
    assert champion() == "2"
    assert "squeezeflow.rolled_back.champion" not in client.get_model_version(name, "2").tags
    history = Tracker(uri, None).alias_history(name, "champion")
    assert [(m.kind, m.from_version, m.to_version) for m in history][-1] == ("rollback", "1", "2")
