"""Early abandonment of a trial whose recovery training cannot reach the gate (search.abandon)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from squeezeflow.recovery import RecoveryCheck
from squeezeflow.spec.search import AbandonSpec
from squeezeflow.training import finetune
from squeezeflow.zoo.cnn import tiny_cnn

# Validation curves measured on the Animal-MNIST subset (1200 train / 400 validation rows), the compact
# small_resnet reference (0.8625 on validation) channel-pruned, then fine-tuned for 6 epochs at 3e-3.
PRUNED_30 = [0.515, 0.750, 0.715, 0.755, 0.797, 0.792]  # from 0.175 after pruning
PRUNED_50 = [0.190, 0.403, 0.598, 0.725, 0.748, 0.755]  # from 0.120: slow but steady
PRUNED_90 = [0.120, 0.120, 0.145, 0.052, 0.092, 0.087]  # from 0.120: learns nothing
RULE = RecoveryCheck(floor=0.8625 - 0.01, allowed_drop=0.01)


def _first_abandonment(rule: RecoveryCheck, initial: float, curve: list[float]) -> int | None:
    for done in range(1, len(curve) + 1):
        if rule.judge(initial, curve[:done], len(curve), seconds=10.0 * done) is not None:
            return done
    return None


def test_a_recovery_that_learns_nothing_is_abandoned_at_its_first_check_and_says_why() -> None:
    assert RULE.first_epoch(6) == 3
    assert _first_abandonment(RULE, 0.120, PRUNED_90) == 3
    gave_up = RULE.judge(0.120, PRUNED_90[:3], 6, seconds=30.0)
    assert gave_up is not None
    assert gave_up.epoch == 3 and gave_up.epochs == 6 and gave_up.best == 0.145
    assert gave_up.gap == pytest.approx(0.8525 - 0.145)
    assert gave_up.seconds_saved == pytest.approx(30.0)  # three more epochs of 10 s
    assert "after recovery epoch 3 of 6" in gave_up.reason and "0.1450" in gave_up.reason


def test_recoveries_that_climb_are_not_abandoned_even_when_they_end_below_the_gate() -> None:
    assert _first_abandonment(RULE, 0.175, PRUNED_30) is None
    # It ends 10 points short of the floor, but it climbed every epoch: behind, not hopeless.
    assert _first_abandonment(RULE, 0.120, PRUNED_50) is None


def test_a_dip_while_the_rate_is_at_its_peak_is_not_taken_for_a_dead_end() -> None:
    # Mildly pruned: 0.85 after pruning, down to 0.80 at the one-cycle peak, climbing back out.
    dip = [0.80, 0.81, 0.84, 0.88, 0.92, 0.95]
    assert _first_abandonment(RecoveryCheck(floor=0.95, allowed_drop=0.01), 0.85, dip) is None


def test_nothing_is_judged_before_the_warm_up_fraction_or_after_the_last_epoch() -> None:
    flat = [0.1] * 10
    rule = RecoveryCheck(floor=0.9, allowed_drop=0.01, after=0.5)
    assert [rule.judge(0.1, flat[:d], 10) is not None for d in range(1, 11)] == [False] * 4 + [True] * 5 + [
        False
    ]
    assert rule.judge(0.1, [0.1], 1) is None  # a one-epoch schedule has nothing left to save


def test_a_trial_within_the_margin_of_the_floor_is_never_abandoned() -> None:
    # 5 allowed drops of 1 point: 4 points below the floor on a flat curve is still within the margin.
    rule = RecoveryCheck(floor=0.90, allowed_drop=0.01)
    assert rule.judge(0.86, [0.86, 0.86, 0.86], 6) is None
    assert rule.judge(0.84, [0.84, 0.84, 0.84], 6) is not None


def test_abandonment_is_on_by_default_and_documented_in_the_schema() -> None:
    from squeezeflow.spec.load import spec_json_schema

    assert AbandonSpec().enabled
    schema = spec_json_schema()
    fields = schema["$defs"]["AbandonSpec"]["properties"]
    assert {"enabled", "after", "tolerances", "slack"} <= set(fields)
    assert fields["after"]["default"] == 0.5 and "description" in fields["tolerances"]


def test_recovery_stops_at_the_check_that_gives_it_up_and_keeps_its_best_weights() -> None:
    rng = np.random.default_rng(0)
    tx, ty = rng.random((256, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 256).astype(np.int64)
    vx, vy = rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64).astype(np.int64)
    torch.manual_seed(0)
    # Random labels cannot be learnt: validation stays near chance, far below a floor of 0.95.
    report = finetune(
        tiny_cnn(), tx, ty, vx, vy, epochs=6, lr=1e-6, batch_size=64, augment=False,
        abandon=RecoveryCheck(floor=0.95, allowed_drop=0.01),
    )  # fmt: skip
    assert report.stopped == "abandoned" and report.epochs_run == 3, report
    assert report.rule_stop is not None and report.rule_stop.epoch == 3
    assert report.rule_stop.seconds_saved > 0
    assert report.best_val_accuracy == max([report.initial_val_accuracy, *report.history])


def test_a_trial_back_to_the_baseline_stops_recovering_only_when_asked() -> None:
    curve = [0.70, 0.85, 0.87, 0.88, 0.88, 0.89]  # the baseline: 0.8625 on validation
    assert _first_abandonment(RULE, 0.12, curve) is None  # off by default: runs to its end
    asked = RecoveryCheck(floor=0.8525, allowed_drop=0.01, stop_recovered=True)
    stop = asked.judge(0.12, curve[:3], 6, seconds=30.0)
    assert stop is not None and stop.kind == "recovered" and stop.epoch == 3
    assert stop.seconds_saved == pytest.approx(30.0) and "recovered after epoch 3 of 6" in stop.reason
    assert asked.judge(0.12, curve[:2], 6) is None  # not before half of the schedule


def test_recovery_that_reaches_the_baseline_stops_there_when_asked() -> None:
    # Every label is one class the untrained model does not predict: it is learnt within a few epochs.
    torch.manual_seed(0)
    model = tiny_cnn()
    rng = np.random.default_rng(0)
    tx, vx = rng.random((256, 1, 28, 28), dtype=np.float32), rng.random((32, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        label = (int(model.eval()(torch.from_numpy(vx)).argmax(1).mode().values) + 1) % 10
    ty, vy = np.full(256, label, dtype=np.int64), np.full(32, label, dtype=np.int64)
    rule = RecoveryCheck(floor=0.95, allowed_drop=0.01, stop_recovered=True)
    report = finetune(model, tx, ty, vx, vy, epochs=8, lr=3e-3, batch_size=64, augment=False, abandon=rule)
    assert report.stopped == "recovered" and report.epochs_run == 4, report
    assert report.best_val_accuracy == 1.0


def test_the_rule_follows_the_spec_and_stays_off_where_top1_accuracy_is_not_the_metric() -> None:
    from squeezeflow.results import BaselineResult
    from squeezeflow.spec.load import parse_spec
    from squeezeflow.stages.optimize import recovery_check
    from tests.reference import job_doc

    base = BaselineResult.model_construct(val_metric=0.80, metric=0.81)
    doc = job_doc("/data/tiny_cnn.pt", "/data/set", tolerance={"mode": "relative", "max_drop": 0.02})
    rule = recovery_check(parse_spec(doc), base)
    assert rule is not None and rule.abandon and not rule.stop_recovered
    assert rule.allowed_drop == pytest.approx(0.016) and rule.floor == pytest.approx(0.784)
    assert recovery_check(parse_spec({**doc, "search": {"abandon": {"enabled": False}}}), base) is None
    asked = recovery_check(
        parse_spec({**doc, "search": {"abandon": {"enabled": False, "stop_recovered": True}}}), base
    )
    assert asked is not None and not asked.abandon and asked.stop_recovered
    assert asked.judge(0.1, [0.1, 0.1, 0.1], 6) is None  # a hopeless curve, but abandonment is off
    assert recovery_check(parse_spec({**doc, "task": {"metric": "macro_f1"}}), base) is None
