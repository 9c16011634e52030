"""The engine in one process: the search's rounds, one trial after another (what ``squeezeflow run``
runs). Airflow and Kubeflow run the same rounds as fanned-out tasks; see `squeezeflow.search`.

Cheap candidates come first (round 0: ONNX Runtime int8 variants, seconds each). Then, for PyTorch
models, rounds of a multi-objective search (Optuna's TPE sampler, seeded) over pruning ratio, importance
criterion, distillation and post-training quantization, minimising the validation-metric drop, MACs and
bytes. The search stops at the trial or time budget, when one more round of the longest trial would not
fit in the time left, or when the Pareto front has not moved for ``patience`` trials. Every candidate is
built, gated and benchmarked as it comes (`squeezeflow.search.policy`), so whatever the search has found
is kept and tracked even when the budget runs out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from squeezeflow.results import BaselineResult, CandidateOutcome, IngestResult
from squeezeflow.search.policy import run_trial
from squeezeflow.search.rounds import RoundPlan, plan_round, read_trial, rounds_of
from squeezeflow.spec.job import JobSpec
from squeezeflow.stages import StageContext

log = logging.getLogger(__name__)


class Engine:
    """Plans the search's rounds and runs each trial in this process, within the spec's budget."""

    def __init__(
        self,
        spec: JobSpec,
        ingest: IngestResult,
        baseline: BaselineResult,
        ctx: StageContext,
        on_candidate: Callable[[CandidateOutcome], None] | None = None,
        on_round: Callable[[RoundPlan], None] | None = None,
    ) -> None:
        self.spec, self.ingest, self.baseline, self.ctx = spec, ingest, baseline, ctx
        self.on_candidate, self.on_round = on_candidate, on_round
        self.outcomes: list[CandidateOutcome] = []
        self.stop: str | None = None

    def run(self) -> list[CandidateOutcome]:
        """Every round until the search stops. A job that already searched (killed, or run again) gets
        its recorded plans and trials back: a retry never grows or changes the candidate set."""
        for index in range(rounds_of(self.spec)):
            plan = plan_round(self.spec, self.ingest, index, self.ctx)
            if self.on_round is not None:
                self.on_round(plan)
            for i, planned in enumerate(plan.trials):
                recorded = read_trial(self.ingest, planned.recipe, self.ctx)
                # The round's trials run here one after another: each trains in its share of the time left.
                outcome = (
                    recorded.outcome
                    if recorded is not None
                    else run_trial(
                        self.spec,
                        self.ingest,
                        self.baseline,
                        planned.recipe,
                        self.ctx,
                        trials_in_turn=len(plan.trials) - i,
                    )
                )
                self.outcomes.append(outcome)
                if self.on_candidate is not None:
                    self.on_candidate(outcome)
            if plan.stop:
                self.stop = plan.stop
                break
        else:
            self.stop = f"all {self.spec.search.rounds} search rounds ran (search.rounds)"
        log.info("search: %d candidates; stopped: %s", len(self.outcomes), self.stop)
        return self.outcomes
