"""One promotion job, run as its own process by `test_promotion_race.py`.

``python -m tests.reliability.promotion_contender PLAN.json`` reads the plan (settings, the baseline
records, and per round: a spec, this job's ingest record, its one candidate outcome, and file names),
then for each round: says it is ready, waits for the go file, calls `promote` and writes its result
with the wall-clock times it started and ended (the test checks that the two jobs overlapped).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from squeezeflow.results import BaselineResult, BenchmarkResult, CandidateOutcome, IngestResult
from squeezeflow.spec.load import parse_spec
from squeezeflow.stages import Settings, StageContext
from squeezeflow.stages.promote import promote


def main(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    settings = Settings(
        artifacts=plan["artifacts"], tracking_uri=plan["tracking_uri"], workdir=Path(plan["workdir"])
    )
    ctx = StageContext.open(settings, plan["experiment"])
    baseline = BaselineResult.model_validate(plan["baseline"])
    target = BenchmarkResult.model_validate(plan["target"])
    for round_ in plan["rounds"]:
        outcome = CandidateOutcome.model_validate(round_["outcome"])
        spec = parse_spec(round_["spec"])
        ingest = IngestResult.model_validate(round_["ingest"])
        Path(round_["ready"]).touch()
        go = Path(round_["go"])
        while not go.exists():
            time.sleep(0.002)
        started = time.time()
        result = promote(spec, ingest, baseline, target, [outcome], ctx)
        ended = time.time()
        out = Path(round_["out"])
        out.with_suffix(".part").write_text(
            json.dumps({"result": result.model_dump(mode="json"), "started": started, "ended": ended})
        )
        out.with_suffix(".part").replace(out)


if __name__ == "__main__":
    main(sys.argv[1])
