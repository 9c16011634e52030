"""Two jobs promoting to the same registered model and alias at once.

Each job is its own process (`promotion_contender.py`) with its own MLflow parent run and one eligible
candidate; both call `promote` at the same instant, several rounds in a row (the better candidate is
sometimes the first to register, sometimes the second). What the test proves, every round: the two
promotions overlapped in time; exactly one of them reports that it promoted, and it is the better one
by the objective (p50 latency on the target profile); the alias points at its version (no lost
update: the worse one never overwrites it); the other job records that it lost (its result, its
version's contest tag, its parent run's tags); the alias history holds exactly one move.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from squeezeflow.results import CandidateOutcome, PromotionResult
from squeezeflow.tracking.registry_tags import contest_tag
from squeezeflow.tracking.tracker import Tracker
from tests.reference import REPO
from tests.reliability.conftest import World, wait_for
from tests.servers import MlflowServer

pytestmark = pytest.mark.integration

ROUNDS = 3


def _rank(outcome: CandidateOutcome, profile: str) -> tuple[float, float]:
    bench = next(b for b in outcome.benchmarks if b.profile == profile)
    assert outcome.candidate.measure is not None
    return bench.p50_ms, float(outcome.candidate.measure.size_bytes)


def _plans(world: World, tmp_path: Path, tag: str) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """Each job's plan, and per round the two contenders (their outcome and parent run)."""
    _, _, _, outcomes = world.records()
    ctx = world.context()
    plans: list[dict[str, Any]] = [
        {
            "artifacts": world.settings.artifacts,
            "tracking_uri": world.settings.tracking_uri,
            "workdir": str(tmp_path / f"work-{i}"),
            "experiment": world.doc["name"],
            "baseline": world.baseline,
            "target": world.target.model_dump(mode="json"),
            "rounds": [],
        }
        for i in range(2)
    ]
    contenders: list[list[dict[str, Any]]] = []
    for r in range(ROUNDS):
        spec = world.spec(f"race-{tag}-{r}").model_dump(mode="json", by_alias=True)
        pair = []
        for i in range(2):
            job = world.another_job(ctx, f"race-{tag}-{r}-{i}")
            outcome = outcomes[(i + r) % 2]
            plans[i]["rounds"].append(
                {
                    "spec": spec,
                    "ingest": job.model_dump(mode="json"),
                    "outcome": outcome.model_dump(mode="json"),
                    "ready": str(tmp_path / f"ready-{r}-{i}"),
                    "go": str(tmp_path / f"go-{r}"),
                    "out": str(tmp_path / f"out-{r}-{i}.json"),
                }
            )
            pair.append({"outcome": outcome, "parent": job.parent_run_id})
        contenders.append(pair)
    return plans, contenders


def test_two_jobs_promoting_at_once_end_with_exactly_one_winner_chosen_by_the_objective(
    world: World, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    plans, contenders = _plans(world, tmp_path, tag)
    jobs = []
    for i, plan in enumerate(plans):
        path = tmp_path / f"plan-{i}.json"
        path.write_text(json.dumps(plan))
        jobs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.reliability.promotion_contender", str(path)],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri)
    tracker = Tracker(mlflow_server.tracking_uri, None)
    profile = world.target.profile
    try:
        for r in range(ROUNDS):
            for i in range(2):
                ready = Path(plans[i]["rounds"][r]["ready"])
                wait_for(f"job {i} to be ready for round {r}", ready.exists, 180)
            Path(plans[0]["rounds"][r]["go"]).touch()
            outs = [
                json.loads(wait_for(f"job {i}'s round {r}", lambda p=p: p.exists() and p.read_text(), 120))
                for i, p in enumerate(Path(plans[i]["rounds"][r]["out"]) for i in range(2))
            ]
            results = [PromotionResult.model_validate(o["result"]) for o in outs]
            name = f"race-{tag}-{r}"

            assert max(o["started"] for o in outs) < min(o["ended"] for o in outs), "the jobs did not overlap"
            winners = [i for i, res in enumerate(results) if res.promoted]
            assert len(winners) == 1, [res.reason for res in results]
            w, lost = winners[0], 1 - winners[0]
            ranks = [_rank(c["outcome"], profile) for c in contenders[r]]
            if ranks[0] != ranks[1]:
                assert ranks[w] < ranks[lost], f"round {r}: the slower candidate won ({ranks})"

            win, loss = results[w], results[lost]
            assert win.candidate_key == contenders[r][w]["outcome"].candidate.key
            assert client.get_model_version_by_alias(name, "champion").version == win.version
            assert loss.lost_to == win.version and loss.contender_version not in (None, win.version)
            assert loss.contender_key == contenders[r][lost]["outcome"].candidate.key
            assert "lost the promotion to @champion" in loss.reason, loss.reason

            versions = {str(v.version): v.tags for v in client.search_model_versions(f"name = '{name}'")}
            assert sorted(versions) == sorted([win.version, loss.contender_version])
            assert versions[win.version][contest_tag("champion")] == "won"
            assert versions[str(loss.contender_version)][contest_tag("champion")] == "lost"
            history = tracker.alias_history(name, "champion")
            assert [(m.kind, m.from_version, m.to_version) for m in history] == [
                ("promote", None, win.version)
            ]
            winner_run = client.get_run(contenders[r][w]["parent"]).data.tags
            loser_run = client.get_run(contenders[r][lost]["parent"]).data.tags
            assert winner_run["squeezeflow.promotion"] == f"{name}/{win.version}@champion"
            assert loser_run["squeezeflow.promotion"] == "lost"
            assert loser_run["squeezeflow.promotion_lost_to"] == f"{name}/{win.version}"
    finally:
        for job in jobs:
            job.kill()
            job.wait(timeout=30)
    for job in jobs:
        assert job.returncode in (0, -9), job.stderr.read()[-3000:] if job.stderr else ""
