"""When to abandon a trial whose recovery training cannot bring it back within the gate's tolerance.

A searched candidate is pruned, then fine-tuned for minutes; one whose validation metric cannot reach
the gate spends that time for a "fail" verdict. `RecoveryCheck` is judged after every recovery epoch
from a fraction of the schedule on, on the trial's own learning curve and the baseline's validation
metric, so it needs nothing from other trials: an Airflow or Kubeflow worker that builds one trial alone
decides exactly as the CLI's in-process search does.

The rule (`RecoveryCheck.judge`), after epoch ``e`` of a schedule of ``E`` epochs:

* the *floor* is the baseline's validation metric less the gate's allowed drop; the *gap* is how far
  the best epoch so far is below it;
* the curve's *pace* is its steepest average climb to its latest epoch, from whichever earlier point
  of it (the metric before training included) gives the steepest, and the optimistic end of the
  schedule is the best so far or ``latest + slack * pace * (E - e)``, whichever is higher;
* the trial is abandoned when ``e >= after * E`` (and ``e < E``), the gap is more than ``tolerances``
  times the allowed drop, and even that optimistic end stays below the floor by more than that margin.

Why by hand, and why this shape. Optuna's SuccessiveHalvingPruner, HyperbandPruner and MedianPruner
decide by comparing a trial with the other trials' intermediate values, which needs one study storage
shared live by every worker (an RDB reachable from each Airflow task or Kubeflow pod); the search here
keeps its study as records in the artifact store, rebuilt per round, and trials of a round run side by
side, so none of them would have peers to compare with. ThresholdPruner and PatientPruner are per-trial,
but ThresholdPruner's bound is fixed, and a fixed bound either abandons a slow but steady recovery (the
metric is low early by design: the pruned model starts far down, and the one-cycle rate is at its peak a
sixth of the way in) or never fires. What the check needs is ThresholdPruner's test (a bound after a
warm-up, ``after``) applied to where the curve can still get to; Optuna's Trial.report/should_prune
cannot run in the search's three-objective study anyway (Optuna refuses intermediate values there).

The projection is deliberately optimistic: recovery curves saturate, so their steepest climb so far
(for a model pruned far down, the jump of its first epochs; for one whose metric dipped while the
one-cycle rate was at its peak, the climb out of the dip) overstates what later epochs add, and
``slack`` doubles it again to cover the gains of the annealing end of the schedule. A curve that jumped
in its first epoch and then stayed flat is judged by the jump averaged over every epoch since, so its
pace falls as it stays flat. A trial is
abandoned only when it is hopeless (a learning rate that does not train, pruning that left too little
to learn with), not when it is merely behind: a wrong abandonment loses a candidate, a late one only
some minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class RecoveryStop:
    """Why and when a trial's recovery stopped before its schedule's end: ``abandoned`` (it cannot reach
    the gate) or ``recovered`` (it is back to the baseline, with ``stop_recovered``)."""

    kind: Literal["abandoned", "recovered"]
    epoch: int
    epochs: int
    best: float
    floor: float
    projected: float
    seconds_saved: float

    @property
    def gap(self) -> float:
        """How far the best validation metric so far was below the floor."""
        return self.floor - self.best

    @property
    def reason(self) -> str:
        if self.kind == "recovered":
            return (
                f"recovered after epoch {self.epoch} of {self.epochs}: best validation metric "
                f"{self.best:.4f}, back to the baseline's (search.abandon.stop_recovered); about "
                f"{self.seconds_saved:.0f} s of training saved"
            )
        return (
            f"abandoned after recovery epoch {self.epoch} of {self.epochs}: best validation metric "
            f"{self.best:.4f}, {self.gap:.4f} below the gate's floor {self.floor:.4f} (the baseline's "
            f"less the allowed drop), and even the curve's optimistic end {self.projected:.4f} stays below "
            f"it (search.abandon); about {self.seconds_saved:.0f} s of training saved"
        )


@dataclass(frozen=True)
class RecoveryCheck:
    """The abandonment rule for one trial (see the module's docstring): ``floor`` is the baseline's
    validation metric less the gate's allowed drop, ``allowed_drop`` the gate's drop itself.
    ``stop_recovered``: also stop, from ``after`` of the schedule on, a trial whose best validation
    metric is back to the baseline's (the floor plus the allowed drop); ``abandon``: False never
    abandons (only ``stop_recovered`` stops)."""

    floor: float
    allowed_drop: float
    after: float = 0.5
    tolerances: float = 5.0
    slack: float = 2.0
    stop_recovered: bool = False
    abandon: bool = True

    def first_epoch(self, epochs: int) -> int:
        """The first epoch after which a schedule of ``epochs`` epochs is judged (at least the first)."""
        return max(1, math.ceil(self.after * epochs - 1e-9))

    def judge(
        self, initial: float, history: list[float], epochs: int, seconds: float = 0.0
    ) -> RecoveryStop | None:
        """Stop (abandoned, or recovered), or None to go on, after ``len(history)`` epochs of a schedule
        of ``epochs``: ``initial`` is the metric before training, ``history`` the metric after each epoch
        so far, ``seconds`` the training time they took (to say what stopping saves)."""
        done = len(history)
        if done == 0 or done >= epochs or done < self.first_epoch(epochs):
            return None
        curve = [initial, *history]
        best, latest = max(curve), curve[-1]
        saved = seconds / done * (epochs - done)
        if self.stop_recovered and best >= self.floor + self.allowed_drop:
            return RecoveryStop("recovered", done, epochs, best, self.floor, best, saved)
        margin = self.tolerances * self.allowed_drop
        if not self.abandon or self.floor - best <= margin:
            return None
        pace = max(0.0, *((latest - curve[j]) / (done - j) for j in range(done)))
        projected = max(best, latest + self.slack * pace * (epochs - done))
        if self.floor - projected <= margin:
            return None
        return RecoveryStop("abandoned", done, epochs, best, self.floor, projected, saved)
