"""Which candidate may be promoted: only one that passed the gate on its own evidence and is both
faster and smaller than the baseline on the target profile; the objective picks among those."""

from __future__ import annotations

from typing import Any

import pytest

from squeezeflow.results import (
    BaselineResult,
    BenchmarkResult,
    CandidateOutcome,
    CandidateResult,
    DatasetInfo,
    GateResult,
    IngestResult,
    ModelMeasure,
    ValidationSummary,
)
from squeezeflow.spec.load import parse_spec
from squeezeflow.spec.search import PassStep, Recipe
from squeezeflow.stages.promote import choose, eligibility, target_benchmark
from squeezeflow.store.artifacts import ArtifactRef

PROFILE = "cpu"


def ref(sha: str, size: int = 100) -> ArtifactRef:
    return ArtifactRef(uri=f"/store/{sha}", sha256=sha, size=size)


INGEST = IngestResult(
    key="j",
    job_key="j",
    spec_digest="s",
    dataset=DatasetInfo(
        uri="/d",
        sha256="data",
        name="d",
        num_classes=10,
        input_shape=[1, 28, 28],
        split_sizes={"train": 1, "val": 1, "test": 1},
        class_counts={},
        imbalance_ratio=1.0,
    ),
    model_source=ref("src"),
    validation=ValidationSummary(success=True, evaluated=1, failed=[], report=ref("gx")),
    parent_run_id="parent",
)
BASELINE = BaselineResult(
    key="b",
    job_key="j",
    onnx=ref("base", 1000),
    logits=ref("logits"),
    metric_name="top1_accuracy",
    metric=0.95,
    val_metric=0.95,
    measure=ModelMeasure(size_bytes=1000, params=10, macs=10),
    parent_run_id="parent",
    model_id="m-base",
)
BASE_BENCH = BenchmarkResult(
    key="bb",
    model_sha256="base",
    profile=PROFILE,
    p50_ms=1.0,
    p90_ms=1.1,
    p95_ms=1.2,
    p99_ms=1.3,
    mean_ms=1.0,
    throughput_per_s=1000,
    iterations=100,
    batch_size=1,
    size_bytes=1000,
)


def outcome(
    name: str, *, size: int = 500, p50: float = 0.5, passed: bool = True, **gate_over: Any
) -> CandidateOutcome:
    sha = f"sha-{name}"
    cand = CandidateResult(
        key=f"k-{name}",
        job_key="j",
        recipe=Recipe(name=name, steps=[PassStep(name="ort_dynamic_int8")]),
        recipe_key="r",
        status="ok",
        onnx=ref(sha, size),
        measure=ModelMeasure(size_bytes=size, params=1, macs=1),
        run_id=f"run-{name}",
        model_id=f"m-{name}",
        seconds=1.0,
    )
    gate_fields: dict[str, Any] = dict(
        key=f"g-{name}",
        candidate_key=cand.key,
        candidate_sha256=sha,
        baseline_sha256="base",
        dataset_sha256="data",
        passed=passed,
        reason="r",
        metric_name="top1_accuracy",
        baseline_metric=0.95,
        candidate_metric=0.945,
        drop=0.005,
        allowed_drop=0.01,
        n=1500,
        agreement=0.99,
    )
    gate_fields.update(gate_over)
    bench = BASE_BENCH.model_copy(
        update={"key": f"bk-{name}", "model_sha256": sha, "p50_ms": p50, "size_bytes": size}
    )
    return CandidateOutcome(candidate=cand, gate=GateResult(**gate_fields), benchmarks=[bench])


def spec(objective: str = "latency") -> Any:
    return parse_spec(
        {
            "name": "j",
            "model": {"format": "onnx", "uri": "/m.onnx"},
            "data": {"uri": "/d"},
            "devices": [{"name": PROFILE}],
            "objective": objective,
            "registry": {"model_name": "m"},
        }
    )


def test_candidate_that_passed_and_is_faster_and_smaller_is_eligible() -> None:
    assert eligibility(outcome("ok"), BASELINE, BASE_BENCH, INGEST) == (True, "eligible")


def test_candidate_that_failed_the_gate_is_not_eligible() -> None:
    ok, why = eligibility(outcome("bad", passed=False), BASELINE, BASE_BENCH, INGEST)
    assert not ok and "failed the gate" in why


@pytest.mark.parametrize("p50", [1.0, 1.5])
def test_candidate_not_faster_than_the_baseline_is_never_eligible(p50: float) -> None:
    ok, why = eligibility(outcome("slow", p50=p50, size=10), BASELINE, BASE_BENCH, INGEST)
    assert not ok and "slower than the baseline" in why


def test_candidate_larger_than_the_baseline_is_never_eligible() -> None:
    ok, why = eligibility(outcome("big", size=1020, p50=0.1), BASELINE, BASE_BENCH, INGEST)
    assert not ok and "larger than the baseline" in why


def test_faster_candidate_of_the_baseline_size_is_eligible() -> None:
    # e.g. the float model with its padding trimmed at run time: same weights, a few more graph nodes
    same = outcome("same", size=1005, p50=0.1)
    assert eligibility(same, BASELINE, BASE_BENCH, INGEST) == (True, "eligible")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"candidate_sha256": "other"}, "different candidate"),
        ({"candidate_key": "k-other"}, "different candidate"),
        ({"baseline_sha256": "other-base"}, "different baseline or dataset"),
        ({"dataset_sha256": "other-data"}, "different baseline or dataset"),
    ],
)
def test_gate_evidence_for_another_candidate_baseline_or_dataset_is_refused(
    override: dict, expected: str
) -> None:
    ok, why = eligibility(outcome("x", **override), BASELINE, BASE_BENCH, INGEST)
    assert not ok and expected in why


def test_candidate_without_a_target_benchmark_is_not_eligible() -> None:
    o = outcome("nobench")
    o = o.model_copy(update={"benchmarks": []})
    ok, why = eligibility(o, BASELINE, BASE_BENCH, INGEST)
    assert not ok and "not benchmarked" in why


def test_latency_objective_picks_the_fastest_eligible_candidate() -> None:
    fast_big = outcome("fast", p50=0.2, size=900)
    slow_small = outcome("small", p50=0.6, size=100)
    too_fast_but_failed = outcome("failed", p50=0.1, size=50, passed=False)
    best = choose(spec("latency"), [slow_small, fast_big, too_fast_but_failed], BASELINE, BASE_BENCH, INGEST)
    assert best is not None and best.candidate.label == "fast"


def test_size_objective_picks_the_smallest_eligible_candidate() -> None:
    best = choose(
        spec("size"),
        [outcome("fast", p50=0.2, size=900), outcome("small", p50=0.6, size=100)],
        BASELINE,
        BASE_BENCH,
        INGEST,
    )
    assert best is not None and best.candidate.label == "small"


def test_nothing_is_chosen_when_no_candidate_is_eligible() -> None:
    assert (
        choose(spec(), [outcome("slow", p50=2.0), outcome("bad", passed=False)], BASELINE, BASE_BENCH, INGEST)
        is None
    )


def test_a_pruned_candidate_is_trusted_although_its_record_stores_its_notes_in_sorted_order(
    tmp_path: Any,
) -> None:
    """Records are written with sorted keys; a candidate's notes keep the order the passes wrote them
    (prune, then finetune). Promotion compared JSON text, so every pruned candidate was distrusted and
    the fastest model a search found was never promoted."""
    from types import SimpleNamespace

    from squeezeflow.stages.promote import _record_problem
    from squeezeflow.store.artifacts import open_store

    store = open_store(str(tmp_path / "store"))
    cand = outcome("pruned").candidate.model_copy(
        update={"notes": {"prune": {"macs_after": 7, "macs_before": 45}, "finetune": {"best_epoch": 5}}}
    )
    store.write_record("optimize", cand.key, cand)
    ctx: Any = SimpleNamespace(store=store)
    assert _record_problem(ctx, "optimize", cand.key, cand, "candidate") is None

    edited = cand.model_copy(update={"notes": {**cand.notes, "prune": {"macs_after": 1}}})
    assert "differs from the optimize record" in str(_record_problem(ctx, "optimize", cand.key, edited, "c"))


# -- speed judged on the paired measurement's confidence interval ----------------------------------


def paired(name: str, speedup: float, low: float, high: float, *, size: int = 500) -> CandidateOutcome:
    """A candidate measured interleaved with the baseline: its speedup and 95% interval. Its p50 is the
    baseline's over the speedup, as a separate run could have measured it."""
    o = outcome(name, size=size, p50=BASE_BENCH.p50_ms / speedup)
    bench = o.benchmarks[0].model_copy(
        update={
            "paired_baseline_sha256": BASELINE.onnx.sha256,
            "speedup": speedup,
            "speedup_low": low,
            "speedup_high": high,
            "speedup_confidence": 0.95,
            "speedup_pairs": 40,
        }
    )
    return o.model_copy(update={"benchmarks": [bench]})


def test_a_candidate_measurably_slower_than_the_baseline_is_refused_with_the_interval() -> None:
    ok, why = eligibility(paired("slow", 0.8, 0.75, 0.86, size=100), BASELINE, BASE_BENCH, INGEST)
    assert not ok
    assert "slower than the baseline on cpu" in why and "95% CI 0.75-0.86" in why


def test_a_candidate_measurably_faster_than_the_baseline_is_eligible_and_says_so() -> None:
    ok, why = eligibility(paired("fast", 1.5, 1.4, 1.6, size=1005), BASELINE, BASE_BENCH, INGEST)
    assert ok and "measurably faster" in why and "95% CI 1.40-1.60" in why


def test_a_candidate_of_no_measurable_speed_difference_is_eligible_only_when_measurably_smaller() -> None:
    ok, why = eligibility(paired("small", 1.02, 0.97, 1.08, size=260), BASELINE, BASE_BENCH, INGEST)
    assert ok and "1.02x faster (95% CI 0.97-1.08, paired): no measurable difference in speed" in why
    assert "3.85x smaller" in why

    ok, why = eligibility(paired("same", 1.02, 0.97, 1.08, size=1000), BASELINE, BASE_BENCH, INGEST)
    assert not ok and "no measurable difference in speed" in why and "not measurably smaller" in why


def test_a_p50_slower_than_the_baseline_within_the_paired_interval_is_not_called_slower() -> None:
    """Two p50s from separate processes said slower (1.03 ms vs 1.0 ms); the paired interval says the
    speeds cannot be told apart, and the candidate is much smaller."""
    o = paired("noisy", 0.97, 0.9, 1.05, size=300)
    assert target_benchmark(o, PROFILE).p50_ms > BASE_BENCH.p50_ms  # type: ignore[union-attr]
    ok, why = eligibility(o, BASELINE, BASE_BENCH, INGEST)
    assert ok and "no measurable difference in speed" in why


def test_a_measurement_paired_with_another_baseline_falls_back_to_the_p50s() -> None:
    o = paired("other", 0.8, 0.75, 0.86, size=100)
    bench = o.benchmarks[0].model_copy(update={"paired_baseline_sha256": "an-older-baseline", "p50_ms": 0.5})
    ok, why = eligibility(o.model_copy(update={"benchmarks": [bench]}), BASELINE, BASE_BENCH, INGEST)
    assert (ok, why) == (True, "eligible")


def test_a_smaller_candidate_tied_on_speed_is_promoted_over_a_faster_one_the_benchmark_cannot_resolve() -> (
    None
):
    """A 38% smaller model used to lose promotion to a 10% latency difference inside the noise."""
    quick_big = paired("quick", 1.10, 0.98, 1.23, size=900)
    small = paired("small", 1.00, 0.94, 1.07, size=558)
    for order in ([quick_big, small], [small, quick_big]):
        best = choose(spec("latency"), order, BASELINE, BASE_BENCH, INGEST)
        assert best is not None and best.candidate.label == "small"


def test_a_measurably_faster_candidate_still_wins_the_latency_objective_over_a_smaller_one() -> None:
    fast = paired("fast", 1.50, 1.42, 1.58, size=900)
    small = paired("small", 1.00, 0.94, 1.07, size=300)
    best = choose(spec("latency"), [small, fast], BASELINE, BASE_BENCH, INGEST)
    assert best is not None and best.candidate.label == "fast"


def test_unpaired_candidates_within_their_measured_noise_tie_on_latency() -> None:
    noisy_fast = outcome("quick", p50=0.50, size=900)
    noisy_small = outcome("small", p50=0.55, size=300)
    noisy = [
        o.model_copy(update={"benchmarks": [o.benchmarks[0].model_copy(update={"cv_p50": 0.06})]})
        for o in (noisy_fast, noisy_small)
    ]
    best = choose(spec("latency"), noisy, BASELINE, BASE_BENCH, INGEST)
    assert best is not None and best.candidate.label == "small"
    quiet = choose(spec("latency"), [noisy_fast, noisy_small], BASELINE, BASE_BENCH, INGEST)
    assert quiet is not None and quiet.candidate.label == "quick"
