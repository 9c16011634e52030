"""The verdict rules: the tolerance on the primary metric's drop, then the secondary guards."""

from __future__ import annotations

import math
from dataclasses import dataclass

from squeezeflow.gate.scoring import Scores
from squeezeflow.gate.stats import samples_needed
from squeezeflow.metrics import PER_SAMPLE
from squeezeflow.results import BaselineResult, GuardCheck
from squeezeflow.spec.job import JobSpec


@dataclass(frozen=True)
class Decision:
    """Pass or fail, and why; ``samples_needed`` when a larger held-out split could decide otherwise."""

    passed: bool
    reason: str
    samples_needed: int | None = None


@dataclass(frozen=True)
class Judgement:
    """A measured candidate's decision and what it rests on."""

    scores: Scores | None  # None: the candidate's outputs were unusable, it was not scored
    decision: Decision
    guards: list[GuardCheck]


def tolerance_decision(spec: JobSpec, baseline: BaselineResult, scores: Scores, n: int) -> Decision:
    """The primary rule: the drop (its upper bootstrap bound with ``method: bootstrap``) within the
    allowed drop. A split where one sample moves a per-sample metric by more than the allowed drop
    fails outright; a bound that fails only for want of samples says about how many would do."""
    tol = spec.tolerance
    allowed = tol.allowed_drop(baseline.metric)
    metric, drop, estimate = scores.metric, scores.drop, scores.estimate
    bound = estimate.upper if tol.method == "bootstrap" else drop
    if tol.method == "bootstrap" and baseline.metric_name in PER_SAMPLE and 1.0 / n > allowed:
        needed = math.ceil(1.0 / allowed) if allowed > 0 else None
        return Decision(
            passed=False,
            reason=(
                f"the held-out split has only n={n} samples: one sample moves {baseline.metric_name} by "
                f"{1.0 / n:.4f}, more than the allowed drop {allowed:.4f}"
                + (f"; at least {needed} samples are needed" if needed else "")
            ),
            samples_needed=needed,
        )
    passed = bound <= allowed + 1e-12
    what = (
        f"upper {tol.confidence:.0%} bound of the drop {bound:+.4f}"
        if tol.method == "bootstrap"
        else f"drop {bound:+.4f}"
    )
    reason = (
        f"{baseline.metric_name} {metric:.4f} vs baseline {baseline.metric:.4f} (drop {drop:+.4f}); "
        f"{what} {'within' if passed else 'exceeds'} the allowed {allowed:.4f} ({tol.mode}) on n={n}"
    )
    needed = None
    if not passed and tol.method == "bootstrap" and drop <= allowed:
        needed = samples_needed(estimate, allowed)
        reason += (
            f": the measured drop is within tolerance but n={n} held-out samples cannot show it at "
            f"{tol.confidence:.0%} confidence" + (f"; about {needed} would be needed" if needed else "")
        )
    return Decision(passed=passed, reason=reason, samples_needed=needed)


def with_guards(decision: Decision, guards: list[GuardCheck]) -> Decision:
    """``decision``, failed by any failing guard: a candidate passes only when every guard does."""
    failed = [g for g in guards if not g.passed]
    if failed and decision.passed:
        reason = decision.reason + "; but " + "; ".join(g.detail for g in failed)
        return Decision(passed=False, reason=reason, samples_needed=decision.samples_needed)
    return decision
