"""What every view of a job result shows, computed once: the candidates' derived values (speedup, size
against the baseline, promoted or not), the verdict sentence, the badges, the device table's cells, and the
numbers as text. The renderers (`figures`, `html_page`, `markdown`, `terminal`) only lay these out.

A candidate's verdict word is `squeezeflow.search.policy.verdict_of`'s (``CandidateRow.gate`` holds it);
nothing here decides one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from squeezeflow.results import (
    BenchmarkResult,
    CandidateOutcome,
    CandidateRow,
    DeviceRow,
    GateResult,
    JobResult,
)

if TYPE_CHECKING:
    from squeezeflow.search.policy import Verdict

MAX_LABEL = 32
MAX_ERROR = 2000


@dataclass(frozen=True)
class CandidateView:
    """One candidate's row with everything the report derives from it."""

    row: CandidateRow
    gate: GateResult | None
    promoted: bool
    speedup: float | None
    size_ratio: float | None
    speedup_interval: tuple[float, float] | None = None

    @property
    def failed(self) -> bool:
        return self.row.status in ("failed", "abandoned")

    @property
    def times_smaller(self) -> float | None:
        """How many times smaller than the baseline (the banner's and every table's size figure)."""
        return 1 / self.size_ratio if self.size_ratio else None


def candidate_views(
    result: JobResult, outcomes: Sequence[CandidateOutcome] | None = None
) -> list[CandidateView]:
    """The job's candidates, in table order, joined with their gate results when ``outcomes`` are given."""
    gates = {o.candidate.key: o.gate for o in outcomes or []}
    views = []
    for r in result.candidates:
        speedup = result.baseline_p50_ms / r.p50_ms if r.p50_ms and result.baseline_p50_ms > 0 else None
        interval = None
        if r.speedup is not None and r.speedup_low is not None and r.speedup_high is not None:
            # measured interleaved with the baseline: that speedup and its confidence interval
            speedup, interval = r.speedup, (r.speedup_low, r.speedup_high)
        ratio = (
            r.size_bytes / result.baseline_size_bytes
            if r.size_bytes is not None and result.baseline_size_bytes > 0
            else None
        )
        promoted = result.promotion.promoted and result.promotion.candidate_key == r.candidate_key
        views.append(CandidateView(r, gates.get(r.candidate_key), promoted, speedup, ratio, interval))
    return views


def verdict_sentence(result: JobResult, views: Sequence[CandidateView] | None = None) -> str:
    """The promotion verdict in one sentence (plain text, not escaped)."""
    p = result.promotion
    if not p.promoted:
        reason = p.reason.strip().rstrip(".") or "no reason was recorded"
        return f"Nothing was promoted: {reason}."
    views = candidate_views(result) if views is None else views
    label = p.candidate_label or p.candidate_key or "a candidate"
    s = f"Promoted {label} as version {p.version} of registered model {p.model_name} with alias @{p.alias}"
    if p.previous_version:
        s += f" (replacing version {p.previous_version})"
    v = next((v for v in views if v.promoted), None)
    gains = []
    if v is not None:
        if v.speedup is not None:
            gains.append(f"{v.speedup:.2f}× faster on {result.target_profile}")
        if v.times_smaller:
            gains.append(f"{v.times_smaller:.1f}× smaller")
        if v.row.delta is not None:
            gains.append(f"{result.metric_name} {points(v.row.delta)} vs the baseline")
    return s + (": " + ", ".join(gains) if gains else "") + "."


def gate_summary(gates: Sequence[GateResult]) -> str:
    """One line for a person: how many candidates passed the gate, and the closest miss."""
    passed = [g for g in gates if g.passed]
    if passed:
        return f"{len(passed)} of {len(gates)} candidates passed the accuracy gate"
    if not gates:
        return "no candidate reached the accuracy gate"
    reasons = "; ".join(sorted({g.reason for g in gates})[:3])
    return f"none of {len(gates)} candidates passed the accuracy gate: {reasons}"


def pareto_front(points: Sequence[tuple[float, float]], maximize: tuple[bool, bool]) -> list[int]:
    """Indices of the points no other point beats on both axes, ordered by x ascending."""
    sx = 1.0 if maximize[0] else -1.0
    sy = 1.0 if maximize[1] else -1.0
    order = sorted(range(len(points)), key=lambda i: (-sx * points[i][0], -sy * points[i][1]))
    front: list[int] = []
    best: float | None = None
    for i in order:
        y = sy * points[i][1]
        if best is None or y > best:
            front.append(i)
            best = y
    return sorted(front, key=lambda i: points[i][0])


# -- the badge each verdict wears ---------------------------------------------------------------------
BADGES: dict[Verdict, str] = {
    "pass": "pass",
    "fail": "fail",
    "not evaluated: slower": "skipped",
    "not built": "skipped",
    "abandoned": "skipped",
}


def badge(verdict: str) -> str:
    """The badge class of a `verdict_of` word (``skipped`` for one this version does not know)."""
    return BADGES.get(verdict, "skipped")  # type: ignore[call-overload]


def was_judged(verdict: str) -> bool:
    """Whether the gate measured the candidate (so its bound and allowance are worth showing)."""
    return verdict in ("pass", "fail")


# -- numbers as text ----------------------------------------------------------------------------------
def points(delta: float) -> str:
    """A metric difference in percentage points, with its sign (none on a rounded zero)."""
    pt = delta * 100
    return "0.00 pt" if abs(pt) < 0.005 else f"{pt:+.2f} pt"


def size_text(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1_000_000:
        return f"{n / 1e3:.1f} kB"
    return f"{n / 1e6:.2f} MB"


def size_vs_baseline(v: CandidateView) -> str:
    """``3.8× smaller`` (or ``1.2× larger``): the same figure as the verdict sentence's."""
    if not v.size_ratio or v.times_smaller is None:
        return "-"
    if v.size_ratio <= 1:
        return f"{v.times_smaller:.1f}× smaller"
    return f"{v.size_ratio:.1f}× larger"


def speedup_text(v: CandidateView, times: str = "×") -> str:
    """The speedup, with its 95% confidence interval where it was measured paired with the baseline."""
    if v.speedup is None:
        return "-"
    if v.speedup_interval is None:
        return f"{v.speedup:.2f}{times}"
    low, high = v.speedup_interval
    return f"{v.speedup:.2f}{times} ({low:.2f}–{high:.2f})"


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def metric_text(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def delta_text(delta: float | None) -> str:
    return "-" if delta is None else points(delta)


def gate_detail(g: GateResult | None) -> str:
    """What the gate measured beyond pass/fail: the drop's upper bound, the allowance and what the bound
    rests on (how many held-out samples, how often the two models agree; see `BOUND_NOTE`)."""
    if g is None:
        return ""
    parts = []
    if g.drop_upper is not None:
        conf = f"{g.confidence:.0%} " if g.confidence is not None else ""
        parts.append(f"drop ≤ {g.drop_upper * 100:.2f} pt ({conf}upper bound)")
    parts.append(f"allowed {g.allowed_drop * 100:.2f} pt")
    if g.n:
        agree = "" if g.agreement is None else f", {g.agreement:.1%} top-1 agreement with the baseline"
        parts.append(f"{g.n} samples{agree}")
    if g.samples_needed:
        parts.append(f"~{g.samples_needed} samples needed")
    for check in g.guards:
        if check.limit is not None or not check.passed:
            parts.append(("✓ " if check.passed else "✗ ") + check.detail)
    return "; ".join(parts)


BOUND_NOTE = (
    "Drop bound: a one-sided upper confidence bound on the metric's drop (baseline minus candidate), from "
    "a paired bootstrap over the held-out samples both models scored (docs/gate.md); a candidate passes "
    "when the bound is within the allowed drop. The bound grows with the number of samples on which the "
    "two models disagree, not only with the metric: a candidate right and wrong on exactly the baseline's "
    "samples has a bound of 0.00 pt, while one with the same accuracy that gains some samples and loses "
    "as many has a larger bound."
)


def shows_bound(views: Sequence[CandidateView]) -> bool:
    """Whether any row shows a drop bound (and so needs `BOUND_NOTE`)."""
    return any(v.gate is not None and v.gate.drop_upper is not None and was_judged(v.row.gate) for v in views)


def note_text(v: CandidateView) -> str:
    if v.row.status == "abandoned":  # its error says why: "abandoned after recovery epoch ..."
        return v.row.error or "abandoned"
    if v.failed:
        return f"failed: {v.row.error or 'no error recorded'}"
    return v.row.note


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


# -- links --------------------------------------------------------------------------------------------
def experiment_url(result: JobResult) -> str | None:
    """The MLflow UI page of the job's experiment when the tracking server is reachable over http(s)."""
    uri = result.tracking_uri
    if not uri.lower().startswith(("http://", "https://")):
        return None
    return f"{uri.rstrip('/')}/#/experiments/{quote(result.experiment_id, safe='')}"


def run_url(result: JobResult, run_id: str | None) -> str | None:
    """The MLflow UI page of ``run_id`` when the tracking server is reachable over http(s)."""
    exp = experiment_url(result)
    if exp is None or not run_id:
        return None
    return f"{exp}/runs/{quote(run_id, safe='')}"


# -- the device table ---------------------------------------------------------------------------------
DEVICE_HEADS = [
    "Model",
    "Profile",
    "Runtime",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "Throughput /s",
    "CV p50",
    "Other batches",
    "Peak memory",
    "MACs (int8)",
    "Energy mJ (est.)",
    "Budgets",
]
NUMERIC_DEVICE_HEADS = frozenset(
    ("p50 ms", "p95 ms", "p99 ms", "Throughput /s", "CV p50", "Energy mJ (est.)")
)

DEVICE_NOTE = (
    "Each model measured in its own process with the profile's threads pinned, in rounds until the round "
    "medians agree (CV p50: their coefficient of variation). Peak memory: the benchmark process's peak "
    "resident memory at the profile's batch size above its resident memory just before the model was "
    "loaded (the runtime library already imported), i.e. the model's weights plus the runtime's session, "
    "memory arenas and buffers; this is the budget's quantity and is not the model's file size, which is "
    "often much smaller. Then the process's whole peak. MACs per sample from the ONNX graph "
    "(share in 8-bit integer arithmetic). Energy: an estimate per sample from the 45 nm per-operation "
    "figures of Horowitz (ISSCC 2014) for the MACs and one DRAM read of the weights per batch, not a "
    "measurement. "
    "Budgets block promotion of candidates only; pytorch_eager profiles measure only the baseline."
)


def _runtime(b: BenchmarkResult) -> str:
    if b.runtime == "onnxruntime":
        return "ORT " + b.execution_provider.removesuffix("ExecutionProvider")
    return b.runtime.replace("_", " ")


def _macs(b: BenchmarkResult) -> str:
    if b.macs is None:
        return "-"
    share = f" ({(b.int8_macs or 0) / b.macs:.0%})" if b.macs else ""
    return f"{b.macs / 1e6:.2f}M{share}"


def _peak(b: BenchmarkResult) -> str:
    if b.peak_rss_mb is None:
        return "-"
    extra = "" if b.peak_rss_increase_mb is None else f"+{b.peak_rss_increase_mb:.1f} MB to load and run, "
    return f"{extra}{b.peak_rss_mb:.0f} MB process peak"


def _budget_status(row: DeviceRow) -> str:
    if row.benchmark.budgets.is_empty():
        return "none set"
    if not row.budget_violations:
        return "within"
    note = " (not enforced on the baseline)" if row.candidate_key is None else ""
    return "over: " + "; ".join(row.budget_violations) + note


OTHER_BATCHES = "Other batches"


def device_heads(rows: Sequence[DeviceRow]) -> list[str]:
    """The device table's columns for ``rows``: `DEVICE_HEADS`, less "Other batches" when no row measured a
    batch size besides its profile's."""
    if any(x.batch_size != r.benchmark.batch_size for r in rows for x in r.benchmark.per_batch):
        return list(DEVICE_HEADS)
    return [h for h in DEVICE_HEADS if h != OTHER_BATCHES]


def device_row(row: DeviceRow, heads: Sequence[str]) -> list[str]:
    """`device_cells` of ``row`` for the columns ``heads`` (from `device_heads`)."""
    cells = dict(zip(DEVICE_HEADS, device_cells(row), strict=True))
    return [cells[h] for h in heads]


def device_cells(row: DeviceRow) -> list[str]:
    """One device-table row as plain text cells, in ``DEVICE_HEADS`` order."""
    b = row.benchmark
    others = ", ".join(
        f"b{x.batch_size}: {x.p50_ms:.3f} ms, {x.throughput_per_s:.0f}/s"
        for x in b.per_batch
        if x.batch_size != b.batch_size
    )
    return [
        row.model,
        f"{row.profile} (batch {b.batch_size})",
        _runtime(b),
        ms(b.p50_ms),
        ms(b.p95_ms),
        ms(b.p99_ms),
        f"{b.throughput_per_s:.0f}",
        f"{b.cv_p50:.2%}",
        others or "-",
        _peak(b),
        _macs(b),
        "-" if b.energy_mj_est is None else f"{b.energy_mj_est:.4f}",
        _budget_status(row),
    ]
