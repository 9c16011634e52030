"""Device budgets: which measurements break them, and that promotion refuses a candidate that breaks
a budget of any profile it was measured on, saying which."""

from __future__ import annotations

from typing import Any

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
from squeezeflow.spec.devices import DeviceBudgets, DeviceProfile
from squeezeflow.spec.search import PassStep, Recipe
from squeezeflow.stages.benchmark import budget_violations
from squeezeflow.stages.promote import eligibility
from squeezeflow.store.artifacts import ArtifactRef


def bench(profile: str = "edge", sha: str = "cand", **over: Any) -> BenchmarkResult:
    fields: dict[str, Any] = dict(
        key=f"b-{profile}-{sha}",
        model_sha256=sha,
        profile=profile,
        p50_ms=1.0,
        p90_ms=1.5,
        p95_ms=2.0,
        p99_ms=3.0,
        mean_ms=1.1,
        throughput_per_s=900.0,
        iterations=600,
        batch_size=1,
        size_bytes=3_000_000,
        peak_rss_mb=90.0,
        peak_rss_increase_mb=20.0,
    )
    fields.update(over)
    return BenchmarkResult(**fields)


def test_a_measurement_within_every_budget_breaks_none() -> None:
    profile = DeviceProfile(
        name="edge", budgets={"max_p95_ms": 2.0, "max_size_mb": 3.0, "max_peak_memory_mb": 20}
    )
    assert budget_violations(profile, bench()) == []
    assert budget_violations(DeviceProfile(name="edge"), bench(p95_ms=1e6)) == []  # no budgets, no limits


def test_each_budget_broken_is_named_with_the_measured_value_and_the_limit() -> None:
    profile = DeviceProfile(
        name="edge", budgets={"max_p95_ms": 1.5, "max_size_mb": 2.5, "max_peak_memory_mb": 8}
    )
    over = budget_violations(profile, bench())
    assert over == [
        "p95 2.000 ms on edge exceeds its budget of 1.5 ms",
        "size 3.000 MB exceeds the edge budget of 2.5 MB",
        "peak memory 20.0 MB on edge exceeds its budget of 8 MB",
    ]


def test_the_memory_budget_is_judged_on_what_the_model_adds_not_on_the_whole_process() -> None:
    budgets = DeviceBudgets(max_peak_memory_mb=50)
    assert budget_violations(budgets, bench(peak_rss_mb=400.0, peak_rss_increase_mb=30.0)) == []
    assert budget_violations(budgets, bench(peak_rss_mb=60.0, peak_rss_increase_mb=55.0))


def test_a_memory_budget_that_could_not_be_measured_counts_as_broken() -> None:
    over = budget_violations(DeviceBudgets(max_peak_memory_mb=50), bench(peak_rss_increase_mb=None))
    assert over == ["peak memory on edge was not measured, so its budget cannot be verified"]


# -- promotion -----------------------------------------------------------------------------------------
def ref(sha: str, size: int) -> ArtifactRef:
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
    model_source=ref("src", 1),
    validation=ValidationSummary(success=True, evaluated=1, failed=[], report=ref("gx", 1)),
    parent_run_id="parent",
)
BASELINE = BaselineResult(
    key="b",
    job_key="j",
    onnx=ref("base", 12_000_000),
    logits=ref("logits", 1),
    metric_name="top1_accuracy",
    metric=0.95,
    val_metric=0.95,
    measure=ModelMeasure(size_bytes=12_000_000, params=10, macs=10),
    parent_run_id="parent",
    model_id="m-base",
)
BASE_BENCH = bench(profile="target", sha="base", p50_ms=4.0, p95_ms=6.0, size_bytes=12_000_000)


def outcome(*benches: BenchmarkResult) -> CandidateOutcome:
    cand = CandidateResult(
        key="k",
        job_key="j",
        recipe=Recipe(name="int8", steps=[PassStep(name="ort_dynamic_int8")]),
        recipe_key="r",
        status="ok",
        onnx=ref("cand", 3_000_000),
        measure=ModelMeasure(size_bytes=3_000_000, params=1, macs=1),
        run_id="run",
        model_id="m",
        seconds=1.0,
    )
    gate = GateResult(
        key="g",
        candidate_key="k",
        candidate_sha256="cand",
        baseline_sha256="base",
        dataset_sha256="data",
        passed=True,
        reason="r",
        metric_name="top1_accuracy",
        baseline_metric=0.95,
        candidate_metric=0.95,
        drop=0.0,
        allowed_drop=0.01,
        n=1500,
        agreement=0.99,
    )
    return CandidateOutcome(candidate=cand, gate=gate, benchmarks=list(benches))


def test_a_candidate_within_its_budgets_stays_eligible() -> None:
    within = DeviceBudgets(max_p95_ms=2.5, max_size_mb=4)
    o = outcome(bench("target", budgets=within), bench("edge", budgets=within))
    assert eligibility(o, BASELINE, BASE_BENCH, INGEST) == (True, "eligible")


def test_a_candidate_over_a_budget_of_a_non_target_profile_is_refused_with_the_reason() -> None:
    o = outcome(bench("target"), bench("edge", p95_ms=9.0, budgets=DeviceBudgets(max_p95_ms=5)))
    ok, why = eligibility(o, BASELINE, BASE_BENCH, INGEST)
    assert not ok
    assert why == "over budget: p95 9.000 ms on edge exceeds its budget of 5 ms"
