"""Moving the alias and recording the move is all or nothing.

MLflow cannot move an alias and write a tag in one transaction, so a promotion moves the alias, then
records the move in the alias history and its verdict on the version. Here the real MLflow server's
store refuses those records: a trigger in its SQLite database (the server's own backend, not a fake in
front of it) aborts the insert of the alias-history tag, and in a second round the update of the
version's contest tag to ``won``, as a database that refuses a write would. What the test proves, with
no holder and with one: the promotion fails with an error that says the record was refused and that
the alias was put back; the alias points where it did before (unset, or the earlier version), the
history holds no entry for the refused move, the version still waits as ``pending``; once the store
accepts writes again, the same promotion runs again and completes, recorded once.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from squeezeflow.errors import InfrastructureError
from squeezeflow.results import CandidateOutcome
from squeezeflow.stages.promote import promote
from squeezeflow.tracking.tracker import Tracker
from tests.reliability.conftest import World
from tests.servers import MlflowServer

pytestmark = pytest.mark.integration

CONTEST = "squeezeflow.contest.champion"


def _p50(o: CandidateOutcome) -> float:
    return o.benchmarks[0].p50_ms


@contextlib.contextmanager
def _store_refuses(
    db: Path, table: str, condition: str, events: tuple[str, ...] = ("INSERT",)
) -> Iterator[None]:
    """The MLflow server's database aborts every ``events`` on ``table`` where ``condition`` holds."""
    names = [f"sqf_refuse_{uuid.uuid4().hex[:8]}_{e.lower()}" for e in events]
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        for trigger, event in zip(names, events, strict=True):
            con.execute(
                f"CREATE TRIGGER {trigger} BEFORE {event} ON {table} WHEN {condition} "
                "BEGIN SELECT RAISE(ABORT, 'the registry store refuses this write'); END"
            )
        con.commit()
    try:
        yield
    finally:
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
            for trigger in names:
                con.execute(f"DROP TRIGGER IF EXISTS {trigger}")
            con.commit()


def test_a_promotion_whose_record_is_refused_puts_the_alias_back_and_completes_when_run_again(
    world: World, mlflow_server: MlflowServer, one_at_a_time: None
) -> None:
    uri = mlflow_server.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    tracker = Tracker(uri, None)
    ctx = world.context()
    _, base, target, outcomes = world.records()
    slow, fast = sorted(outcomes, key=_p50, reverse=True)
    assert _p50(slow) > _p50(fast), "the two candidates measured the same: nothing to rank"
    name = f"atomic-{uuid.uuid4().hex[:6]}"
    spec = world.spec(name)
    job1, job2 = world.another_job(ctx, f"{name}-1"), world.another_job(ctx, f"{name}-2")

    def moves() -> list[tuple[str, str | None, str]]:
        return [(m.kind, m.from_version, m.to_version) for m in tracker.alias_history(name, "champion")]

    history_refused = _store_refuses(
        mlflow_server.db_path,
        "registered_model_tags",
        f"NEW.name = '{name}' AND NEW.key LIKE 'squeezeflow.alias_history.%'",
    )
    # no holder yet: the alias is removed again
    with history_refused, pytest.raises(InfrastructureError) as refused:
        promote(spec, job1, base, target, [slow], ctx)
    message = " ".join(str(refused.value).split())
    assert f"moving {name}@champion to version 1 could not be recorded" in message, message
    assert "the registry store refuses this write" in message, message
    assert "@champion was put back to no version (the alias was not set)" in message, message
    assert tracker.alias_version(name, "champion") is None
    assert moves() == []
    assert client.get_model_version(name, "1").tags[CONTEST] == "pending"

    first = promote(spec, job1, base, target, [slow], ctx)
    assert first.promoted and first.version == "1", first.reason
    assert moves() == [("promote", None, "1")]

    # a holder: the alias goes back to it, whichever record is refused
    with (
        _store_refuses(
            mlflow_server.db_path,
            "registered_model_tags",
            f"NEW.name = '{name}' AND NEW.key LIKE 'squeezeflow.alias_history.%'",
        ),
        pytest.raises(InfrastructureError) as refused,
    ):
        promote(spec, job2, base, target, [fast], ctx)
    assert "@champion was put back to version 1, so the registry is as it was before" in " ".join(
        str(refused.value).split()
    ), refused.value
    with (
        _store_refuses(
            mlflow_server.db_path,
            "model_version_tags",
            f"NEW.name = '{name}' AND NEW.key = '{CONTEST}' AND NEW.value = 'won'",
            events=("INSERT", "UPDATE"),
        ),
        pytest.raises(InfrastructureError) as refused,
    ):
        promote(spec, job2, base, target, [fast], ctx)
    assert "@champion was put back to version 1" in " ".join(str(refused.value).split()), refused.value
    assert tracker.alias_version(name, "champion") == "1"
    assert moves() == [("promote", None, "1")], "the refused promotion left a history entry"
    assert client.get_model_version(name, "2").tags[CONTEST] == "pending"

    second = promote(spec, job2, base, target, [fast], ctx)
    assert second.promoted and (second.version, second.previous_version) == ("2", "1"), second.reason
    assert tracker.alias_version(name, "champion") == "2"
    assert moves() == [("promote", None, "1"), ("promote", "1", "2")]
    assert client.get_model_version(name, "2").tags[CONTEST] == "won"
    back = tracker.rollback_alias(name, "champion")
    assert (back.from_version, back.to_version) == ("2", "1")
