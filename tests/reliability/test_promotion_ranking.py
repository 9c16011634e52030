"""How a promotion decides against the version holding the alias, and how the alias history is read
back for a rollback (pure functions, no servers).

* Comparable standings (same profile and measurement settings, dataset, baseline ONNX and metric) are
  ranked by the objective; a tie keeps the holder.
* A holder that cannot be ranked against the new version (no squeezeflow benchmark recorded, another
  profile or settings, another dataset or baseline, as after retraining) is replaced by the newer
  promotion, and the reason says which conditions differ.
* The history replays as a stack: each rollback goes back one promotion, and a rollback to a version
  the alias never held pushes it. Each entry records the chain after its move, so a history pruned to
  its newest entries (registry.history_limit) still rolls back, up to that many moves.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from squeezeflow.stages.promote import Standing, beats, standing
from squeezeflow.tracking.aliases import (
    AliasMove,
    chain_after,
    history_limit_of,
    previous_holder,
    rollback_chain,
)
from squeezeflow.tracking.registry_tags import DEFAULT_HISTORY_LIMIT


def _tags(p50: float, size: int, **over: str) -> dict[str, str]:
    tags = {
        "squeezeflow.benchmark": json.dumps(
            {"profile": "cpu-2t", "profile_settings": "s1", "p50_ms": p50, "size_bytes": size}
        ),
        "squeezeflow.gate": json.dumps({"metric": "top1_accuracy"}),
        "squeezeflow.dataset_sha256": "data",
        "squeezeflow.baseline_onnx_sha256": "base",
    }
    tags.update(over)
    return tags


def _standing(p50: float, size: int, **over: str) -> Standing:
    got = standing(_tags(p50, size, **over))
    assert got is not None
    return got


@pytest.mark.parametrize(
    ("objective", "mine", "theirs", "wins"),
    [
        ("latency", (1.0, 900), (2.0, 500), True),
        ("latency", (2.0, 500), (1.0, 900), False),
        ("latency", (1.0, 500), (1.0, 500), False),  # a tie keeps the holder
        ("latency", (1.0, 400), (1.0, 500), True),  # equal latency: the smaller wins
        ("size", (2.0, 500), (1.0, 900), True),
        ("size", (1.0, 900), (2.0, 500), False),
    ],
)
def test_comparable_versions_are_ranked_by_the_objective(
    objective: str, mine: tuple[float, int], theirs: tuple[float, int], wins: bool
) -> None:
    ok, why = beats(_standing(*mine), _standing(*theirs), "7", objective)
    assert ok is wins, why
    assert ("beats version 7" if wins else "version 7 is as good or better") in why


@pytest.mark.parametrize(
    ("what", "over"),
    [
        (
            "profile",
            {"squeezeflow.benchmark": json.dumps({"profile": "arm", "p50_ms": 0.1, "size_bytes": 1})},
        ),
        ("dataset", {"squeezeflow.dataset_sha256": "other-data"}),
        ("baseline", {"squeezeflow.baseline_onnx_sha256": "retrained"}),
    ],
)
def test_a_holder_measured_under_other_conditions_is_replaced_by_the_newer_promotion(
    what: str, over: dict[str, str]
) -> None:
    # the holder is far better by the numbers, but the numbers cannot be compared
    ok, why = beats(_standing(5.0, 5000), _standing(0.1, 1, **over), "3", "latency")
    assert ok, why
    assert what in why.split("(")[1] and "the newer promotion replaced it" in why


def test_a_holder_without_a_recorded_benchmark_is_replaced() -> None:
    ok, why = beats(_standing(5.0, 5000), standing({"owner": "registered by hand"}), "1", "latency")
    assert ok and "has no recorded squeezeflow benchmark" in why


def _moves(*steps: tuple[str, str | None, str]) -> list[AliasMove]:
    return [
        AliasMove(at_ms=i, kind=k, from_version=f, to_version=t, reason="")
        for i, (k, f, t) in enumerate(steps)
    ]


def test_the_history_replays_as_a_stack_so_each_rollback_goes_back_one_promotion() -> None:
    promoted = _moves(("promote", None, "1"), ("promote", "1", "2"), ("promote", "2", "3"))
    assert previous_holder(promoted, "3") == "2"
    once = [*promoted, *_moves(("rollback", "3", "2"))]
    assert previous_holder(once, "2") == "1"
    twice = [*once, *_moves(("rollback", "2", "1"))]
    assert previous_holder(twice, "1") is None
    pushed = [*promoted, *_moves(("rollback", "3", "9"))]  # --to a version the alias never held
    assert previous_holder(pushed, "9") == "3"
    assert previous_holder(promoted, "2") is None, "the alias was moved outside squeezeflow"


def _recorded(*steps: tuple[str, str | None, str], limit: int) -> list[AliasMove]:
    """Moves as squeezeflow records them now: each with the rollback chain after it."""
    history: list[AliasMove] = []
    for i, (k, f, t) in enumerate(steps):
        chain = chain_after(history, f, t, k, limit)
        history.append(AliasMove(i, k, f, t, "", history_limit=limit, chain=chain))
    return history


def test_a_pruned_history_still_rolls_back_one_move_from_its_newest_entry() -> None:
    steps = [("promote", None, "1"), ("promote", "1", "2")]
    steps += [("rollback", "2", "1"), ("rollback", "1", "2")] * 5  # back and forth with --to
    history = _recorded(*steps, ("promote", "2", "3"), limit=3)
    assert previous_holder(history, "3") == "2"
    assert previous_holder(history[-3:], "3") == "2", "what pruning keeps is enough"
    assert previous_holder(history[-1:], "3") == "2"
    once = _recorded(*steps, ("promote", "2", "3"), ("rollback", "3", "2"), limit=3)[-3:]
    assert previous_holder(once, "2") == "1"
    assert rollback_chain(history) == ["1", "2", "3"]
    many = _recorded(*((("promote", str(v), str(v + 1))) for v in range(1, 30)), limit=3)
    assert rollback_chain(many) == ["27", "28", "29", "30"], "limit moves back, no more"


def test_the_chain_restarts_where_the_alias_was_when_it_was_moved_outside_squeezeflow() -> None:
    history = _recorded(("promote", None, "1"), ("promote", "1", "2"), ("promote", "7", "8"), limit=20)
    assert previous_holder(history, "8") == "7", "the version set by hand is what the promotion replaced"
    assert previous_holder(history[:2], "7") is None


def test_entries_written_before_the_chain_was_recorded_still_replay_as_a_stack() -> None:
    legacy = _moves(("promote", None, "1"), ("promote", "1", "2"), ("promote", "2", "3"))
    newer = _recorded(("promote", "3", "4"), limit=20)
    newer = [dataclasses.replace(newer[0], chain=chain_after(legacy, "3", "4", "promote", 20))]
    assert previous_holder([*legacy, *newer], "4") == "3"
    assert rollback_chain([*legacy, *newer]) == ["1", "2", "3", "4"]
    assert history_limit_of(legacy) == DEFAULT_HISTORY_LIMIT and history_limit_of(newer) == 20
