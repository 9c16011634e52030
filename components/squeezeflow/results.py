"""Typed, JSON-serialisable stage results. Adapters pass these (or their URIs) between tasks."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    model_serializer,
)

from squeezeflow.spec.devices import DeviceBudgets
from squeezeflow.spec.search import Recipe
from squeezeflow.store.artifacts import ArtifactRef


def content_key(*parts: str) -> str:
    """A stable key from content hashes and names."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenizedText(_Result):
    """A raw-text dataset (``squeezeflow.text/v1``) as ingest tokenized it with the model's tokenizer:
    the ``squeezeflow.npz/v1`` token-id dataset every later stage reads."""

    uri: str = Field(description="The token-id dataset ingest wrote into the artifact store.")
    sha256: str = Field(description="Its content hash (dataset.json and the three splits).")
    max_length: int
    pad_token_id: int
    truncated: dict[str, int] = Field(description="Per split, how many texts were longer and were cut.")


class DatasetInfo(_Result):
    uri: str
    sha256: str
    name: str
    num_classes: int
    input_shape: list[int]
    input_dtype: Literal["float32", "int64"] = Field(
        default="float32", description="float32 features or pixels; int64 token ids (a text model)."
    )
    split_sizes: dict[str, int]
    class_counts: dict[str, list[int]]
    imbalance_ratio: float = Field(description="Largest over smallest class count in the train split.")
    warnings: list[str] = Field(
        default_factory=list,
        description="What ingest found doubtful but not wrong (test samples seen in train).",
    )
    tokenized: TokenizedText | None = Field(
        default=None, description="For a raw-text dataset: the token ids ingest made of it."
    )

    @property
    def engine_uri(self) -> str:
        """The dataset the engine reads: the token ids ingest made of raw text, else the job's own."""
        return self.tokenized.uri if self.tokenized is not None else self.uri

    @property
    def engine_sha256(self) -> str:
        return self.tokenized.sha256 if self.tokenized is not None else self.sha256


class ValidationSummary(_Result):
    success: bool
    evaluated: int
    failed: list[str]
    report: ArtifactRef


class IngestResult(_Result):
    stage: Literal["ingest"] = "ingest"
    key: str
    job_key: str
    spec_digest: str
    dataset: DatasetInfo
    model_source: ArtifactRef
    validation: ValidationSummary
    parent_run_id: str


class ModelMeasure(_Result):
    size_bytes: int
    params: int
    macs: int


class BaselineResult(_Result):
    stage: Literal["baseline"] = "baseline"
    key: str
    job_key: str
    onnx: ArtifactRef
    logits: ArtifactRef = Field(description="Held-out logits (.npy), the gate's paired reference.")
    metric_name: str
    metric: float
    val_metric: float = Field(description="The metric on the validation split (what the search may use).")
    measure: ModelMeasure
    parent_run_id: str
    model_id: str


class CandidateResult(_Result):
    stage: Literal["optimize"] = "optimize"
    key: str
    job_key: str
    recipe: Recipe
    recipe_key: str
    status: Literal["ok", "failed", "abandoned"] = Field(
        description="ok: built; failed: a pass could not build it; abandoned: its recovery training was "
        "given up as unable to reach the gate (search.abandon; ``error`` says why, ``notes['abandoned']`` "
        "the epoch, the gap and the seconds saved)."
    )
    error: str | None = None
    onnx: ArtifactRef | None = None
    measure: ModelMeasure | None = None
    run_id: str
    model_id: str | None = None
    seconds: float
    val_metric: float | None = Field(default=None, description="The metric on the validation split.")
    notes: dict[str, Any] = Field(default_factory=dict, description="What the passes reported.")

    @property
    def label(self) -> str:
        return self.recipe.label


class GuardCheck(_Result):
    """One secondary gate condition and its evidence."""

    name: str = Field(description="class_recall, agreement, or robustness:<perturbation>.")
    value: float = Field(description="What was measured (a drop, or an agreement fraction).")
    limit: float | None = Field(description="The configured limit; None when only reported.")
    passed: bool
    detail: str


class GateResult(_Result):
    stage: Literal["gate"] = "gate"
    key: str
    candidate_key: str
    candidate_sha256: str | None
    baseline_sha256: str
    dataset_sha256: str
    passed: bool
    reason: str
    metric_name: str
    baseline_metric: float
    candidate_metric: float | None
    drop: float | None
    allowed_drop: float
    n: int
    agreement: float | None
    drop_upper: float | None = Field(default=None, description="Upper confidence bound of the drop.")
    confidence: float | None = None
    samples_needed: int | None = Field(default=None, description="Held-out samples a pass would need.")
    worst_class: int | None = Field(default=None, description="The class whose recall dropped most.")
    worst_class_recall_drop: float | None = Field(default=None, description="That class's recall drop.")
    guards: list[GuardCheck] = Field(default_factory=list, description="Secondary conditions checked.")
    evidence: ArtifactRef | None = None


class BatchLatency(_Result):
    """Latency and throughput of one batch size on a profile."""

    batch_size: int
    p50_ms: float
    p95_ms: float
    throughput_per_s: float = Field(description="Samples per second.")
    cv_p50: float = Field(description="Coefficient of variation of the round medians.")
    rounds: int


class BenchmarkResult(_Result):
    """One model measured on one device profile (latencies at the profile's ``batch_size``)."""

    stage: Literal["benchmark"] = "benchmark"
    key: str
    model_sha256: str
    profile: str
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    throughput_per_s: float
    iterations: int
    rounds: int = Field(default=1, description="Measurement rounds run until their medians agreed.")
    cv_p50: float = Field(default=0.0, description="Coefficient of variation of the round medians.")
    batch_size: int
    size_bytes: int
    runtime: str = "onnxruntime"
    execution_provider: str = "CPUExecutionProvider"
    input_shape: list[int] | None = Field(default=None, description="One sample's shape as measured.")
    per_batch: list[BatchLatency] = Field(
        default_factory=list, description="Every batch size measured, `batch_size` first."
    )
    peak_rss_mb: float | None = Field(
        default=None, description="Peak resident set size of the benchmark process (MB, 10^6 bytes)."
    )
    peak_rss_increase_mb: float | None = Field(
        default=None, description="That peak minus the process's RSS just before the model was loaded."
    )
    params: int | None = Field(default=None, description="Weight and bias elements.")
    macs: int | None = Field(default=None, description="Multiply-accumulates per sample.")
    int8_macs: int | None = Field(default=None, description="Of which in 8-bit integer arithmetic.")
    weight_bytes: int | None = Field(default=None, description="Bytes of weights read per inference.")
    energy_mj_est: float | None = Field(
        default=None,
        description="Estimated energy per sample in millijoules, from the per-operation model in "
        "`squeezeflow.devices.energy` (an estimate, not a measurement).",
    )
    budgets: DeviceBudgets = Field(
        default_factory=DeviceBudgets,
        description="The profile's budgets in the job that asked for this result (not part of its key).",
    )
    paired_baseline_sha256: str | None = Field(
        default=None,
        description="When the candidate was measured paired with a baseline (interleaved with it in one "
        "process, on a local ONNX Runtime profile): that baseline's ONNX sha256 (part of the record's key).",
    )
    speedup: float | None = Field(
        default=None,
        description="Paired: how many times faster than that baseline, the median over the paired blocks "
        "of the baseline's block median over the candidate's (above 1: faster).",
    )
    speedup_low: float | None = Field(
        default=None, description="Lower bound of the speedup's confidence interval (distribution-free)."
    )
    speedup_high: float | None = Field(default=None, description="Upper bound of that interval.")
    speedup_confidence: float | None = Field(default=None, description="That interval's confidence level.")
    speedup_pairs: int | None = Field(
        default=None, description="Paired blocks (one of the baseline's, one of the candidate's) measured."
    )
    paired_baseline_p50_ms: float | None = Field(
        default=None, description="The baseline's p50 in the same process, interleaved with the candidate."
    )


class DeviceRow(_Result):
    """One model on one device profile, for the report's device table: the measurement and the budgets
    it breaks (enforced for candidates, shown for the baseline)."""

    model: str = Field(description="'baseline' or the candidate's label.")
    candidate_key: str | None = None
    profile: str
    benchmark: BenchmarkResult
    budget_violations: list[str] = Field(default_factory=list)


class CandidateOutcome(_Result):
    """Everything promotion needs to know about one candidate."""

    candidate: CandidateResult
    gate: GateResult
    benchmarks: list[BenchmarkResult] = Field(default_factory=list)


class Trial(_Result):
    """One candidate's trial so far, as it goes from task to task: built (``candidate``), then judged
    (``gate``; a candidate skipped as slower also carries the ``benchmarks`` measurement that decided it).
    Its JSON has only the parts it has (``{"candidate": ...}`` after the build); a finished trial is a
    `CandidateOutcome`."""

    candidate: CandidateResult
    gate: GateResult | None = None
    benchmarks: list[BenchmarkResult] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _only_what_it_has(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        doc: dict[str, Any] = handler(self)
        return {k: v for k, v in doc.items() if k == "candidate" or v}

    @classmethod
    def of(cls, outcome: CandidateOutcome) -> Trial:
        return cls(candidate=outcome.candidate, gate=outcome.gate, benchmarks=outcome.benchmarks)


class Pending(BaseModel):
    """Not done yet: the records device agents still owe (`squeezeflow agent`), by profile. A task that
    may wait (``defer_remote``) returns this instead of its result; call it again once every record
    exists. Never serialised: the Airflow operators defer on it (`StoreRecordTrigger` polls the store)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: str = Field(description="The store stage the records are written under.")
    keys: dict[str, str] = Field(description="Profile name -> record key.")


#: The baseline measured on every device profile, keyed by profile name.
BaselineBenchmarks = dict[str, BenchmarkResult]
_BASELINE_BENCHMARKS: TypeAdapter[BaselineBenchmarks] = TypeAdapter(BaselineBenchmarks)


def parse_baseline_benchmarks(doc: Mapping[str, Any]) -> BaselineBenchmarks:
    """`BaselineBenchmarks` from its JSON (``{profile: benchmark record}``)."""
    return _BASELINE_BENCHMARKS.validate_python(dict(doc))


def dump_baseline_benchmarks(benches: Mapping[str, BenchmarkResult]) -> dict[str, Any]:
    """`BaselineBenchmarks` as JSON (``{profile: benchmark record}``)."""
    return dict(_BASELINE_BENCHMARKS.dump_python(dict(benches), mode="json"))


class RetrainResult(_Result):
    """A retrained baseline in the artifact store."""

    entrypoint: str
    kwargs: dict[str, Any]
    model: ArtifactRef
    model_uri: str
    previous_model_uri: str
    seconds: float


class PromotionResult(_Result):
    stage: Literal["promote"] = "promote"
    key: str
    promoted: bool
    reason: str
    candidate_key: str | None = None
    candidate_label: str | None = None
    model_name: str
    alias: str
    version: str | None = None
    previous_version: str | None = None
    lost_to: str | None = Field(
        default=None,
        description="When the best eligible candidate was registered but did not beat the version "
        "holding the alias: that version (the alias did not move).",
    )
    contender_key: str | None = Field(default=None, description="The candidate that lost the alias.")
    contender_version: str | None = Field(
        default=None, description="The version it was registered as (not aliased)."
    )


class CandidateRow(_Result):
    label: str
    candidate_key: str
    status: str
    error: str | None
    metric: float | None
    delta: float | None
    size_bytes: int | None
    p50_ms: float | None
    p95_ms: float | None
    speedup: float | None = Field(
        default=None, description="Paired speedup against the baseline on the target profile, when measured."
    )
    speedup_low: float | None = Field(default=None, description="Its confidence interval's lower bound.")
    speedup_high: float | None = Field(default=None, description="Its upper bound.")
    gate: str
    eligible: bool
    note: str
    run_id: str
    model_id: str | None


class JobResult(_Result):
    job: str
    job_key: str
    metric_name: str
    baseline_metric: float
    baseline_size_bytes: int
    baseline_p50_ms: float
    baseline_p95_ms: float
    target_profile: str
    candidates: list[CandidateRow]
    promotion: PromotionResult
    tracking_uri: str
    artifacts: str
    parent_run_id: str
    experiment_id: str
    seconds: float
    report_html: str | None = Field(
        default=None, description="URI of the job's self-contained HTML report in the artifact store."
    )
    report_markdown: str | None = Field(
        default=None, description="URI of the job's Markdown report in the artifact store."
    )
    devices: list[DeviceRow] = Field(
        default_factory=list, description="The baseline and every measured candidate on every profile."
    )
    search_rounds: int = Field(default=0, description="Search rounds planned (round 0 included).")
    search_stop: str | None = Field(default=None, description="Why the search planned no more candidates.")
