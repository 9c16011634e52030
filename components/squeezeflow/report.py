"""A readable report of one compression job, as a self-contained HTML page and as Markdown.

The HTML page carries everything inline (CSS, plots as base64 PNG): an Airflow task can link to it
and a Kubeflow run view can display it without fetching anything else. The only external references
are links to the job's MLflow runs, and only when the tracking server is reachable over http(s).
Every piece of text that came from a user or a pass (job and candidate labels, errors, reasons) is
escaped before it reaches the page.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from squeezeflow.errors import InfrastructureError
from squeezeflow.results import (
    BenchmarkResult,
    CandidateOutcome,
    CandidateRow,
    DeviceRow,
    GateResult,
    JobResult,
)
from squeezeflow.store import ArtifactRef, ArtifactStore

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

_PASS = "#15803d"
_FAIL = "#dc2626"
_PROMOTED = "#f59e0b"
_FRONT = "#6b7280"
_MAX_LABEL = 32
_MAX_ERROR = 2000


# -- derived values ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CandidateView:
    """One candidate's row with everything the report derives from it."""

    row: CandidateRow
    gate: GateResult | None
    promoted: bool
    speedup: float | None
    size_ratio: float | None

    @property
    def failed(self) -> bool:
        return self.row.status == "failed"


def candidate_views(
    result: JobResult, outcomes: Sequence[CandidateOutcome] | None = None
) -> list[CandidateView]:
    """The job's candidates, in table order, joined with their gate results when ``outcomes`` are given."""
    gates = {o.candidate.key: o.gate for o in outcomes or []}
    views = []
    for r in result.candidates:
        speedup = result.baseline_p50_ms / r.p50_ms if r.p50_ms and result.baseline_p50_ms > 0 else None
        ratio = (
            r.size_bytes / result.baseline_size_bytes
            if r.size_bytes is not None and result.baseline_size_bytes > 0
            else None
        )
        promoted = result.promotion.promoted and result.promotion.candidate_key == r.candidate_key
        views.append(CandidateView(r, gates.get(r.candidate_key), promoted, speedup, ratio))
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
        if v.size_ratio:
            gains.append(f"{1 / v.size_ratio:.1f}× smaller")
        if v.row.delta is not None:
            gains.append(f"{result.metric_name} {_points(v.row.delta)} vs the baseline")
    return s + (": " + ", ".join(gains) if gains else "") + "."


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


# -- formatting -------------------------------------------------------------------------------------
def _points(delta: float) -> str:
    pt = delta * 100
    return "0.00 pt" if abs(pt) < 0.005 else f"{pt:+.2f} pt"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1_000_000:
        return f"{n / 1e3:.1f} kB"
    return f"{n / 1e6:.2f} MB"


def _ratio(v: CandidateView) -> str:
    return "-" if not v.size_ratio else f"{v.size_ratio:.2f}×"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _metric(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _gate_detail(g: GateResult | None) -> str:
    """What the gate measured beyond pass/fail: the drop's upper bound and the allowance."""
    if g is None:
        return ""
    parts = []
    if g.drop_upper is not None:
        conf = f"{g.confidence:.0%} " if g.confidence is not None else ""
        parts.append(f"drop ≤ {g.drop_upper * 100:.2f} pt ({conf}upper bound)")
    parts.append(f"allowed {g.allowed_drop * 100:.2f} pt")
    if g.samples_needed:
        parts.append(f"~{g.samples_needed} samples needed")
    for check in g.guards:
        if check.limit is not None or not check.passed:
            parts.append(("✓ " if check.passed else "✗ ") + check.detail)
    return "; ".join(parts)


def _note(v: CandidateView) -> str:
    if v.failed:
        return f"failed: {v.row.error or 'no error recorded'}"
    return v.row.note


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _short(label: str) -> str:
    return label if len(label) <= _MAX_LABEL else label[: _MAX_LABEL - 1] + "…"


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


# -- plots ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlotPoint:
    label: str
    x: float
    y: float
    passed: bool
    promoted: bool


def accuracy_speedup_points(result: JobResult, views: Sequence[CandidateView]) -> list[PlotPoint]:
    """Built candidates with a metric and a target benchmark: (speedup vs baseline, metric)."""
    return [
        PlotPoint(v.row.label, v.speedup, v.row.metric, v.row.gate == "pass", v.promoted)
        for v in views
        if not v.failed and v.speedup is not None and v.row.metric is not None
    ]


def size_latency_points(result: JobResult, views: Sequence[CandidateView]) -> list[PlotPoint]:
    """Built candidates with a size and a target benchmark: (size in MB, p50 in ms)."""
    return [
        PlotPoint(v.row.label, v.row.size_bytes / 1e6, v.row.p50_ms, v.row.gate == "pass", v.promoted)
        for v in views
        if not v.failed and v.row.size_bytes is not None and v.row.p50_ms is not None
    ]


def scatter_figure(
    points: Sequence[PlotPoint],
    baseline: tuple[float, float],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    maximize: tuple[bool, bool],
    threshold: float | None = None,
) -> Figure:
    """Candidates coloured by gate verdict, the promoted one ringed, the baseline marked and the Pareto
    front (over the candidates and the baseline) drawn."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)

    xy = [(p.x, p.y) for p in points] + [baseline]
    front = pareto_front(xy, maximize)
    if len(front) > 1:
        ax.plot(
            [xy[i][0] for i in front],
            [xy[i][1] for i in front],
            ls="--",
            lw=1.2,
            color=_FRONT,
            zorder=1,
            label="Pareto front",
        )
    if threshold is not None:
        ax.axhline(threshold, ls=":", lw=1.2, color=_FAIL, zorder=1, label="gate: allowed drop")
    passed = [p for p in points if p.passed]
    failed = [p for p in points if not p.passed]
    if passed:
        ax.scatter(
            [p.x for p in passed],
            [p.y for p in passed],
            s=46,
            marker="o",
            color=_PASS,
            zorder=3,
            label="gate passed",
        )
    if failed:
        ax.scatter(
            [p.x for p in failed],
            [p.y for p in failed],
            s=52,
            marker="X",
            color=_FAIL,
            zorder=3,
            label="gate failed",
        )
    promoted = [p for p in points if p.promoted]
    if promoted:
        ax.scatter(
            [p.x for p in promoted],
            [p.y for p in promoted],
            s=320,
            facecolors="none",
            edgecolors=_PROMOTED,
            linewidths=2.5,
            zorder=4,
            label="promoted",
        )
    ax.scatter([baseline[0]], [baseline[1]], s=70, marker="D", color="black", zorder=3, label="baseline")
    for p in points:
        ax.annotate(
            _short(p.label),
            (p.x, p.y),
            xytext=(9, 6),
            textcoords="offset points",
            fontsize=8,
            fontweight="bold" if p.promoted else "normal",
            parse_math=False,
        )
    ax.margins(0.12)
    ax.legend(fontsize=8, loc="best", framealpha=0.85, markerscale=0.7)
    return fig


def _front_caption(
    points: Sequence[PlotPoint], baseline: tuple[float, float], maximize: tuple[bool, bool]
) -> str:
    labels = [p.label for p in points] + ["baseline"]
    front = pareto_front([(p.x, p.y) for p in points] + [baseline], maximize)
    return "Pareto front (dashed, over every plotted model): " + ", ".join(labels[i] for i in front) + "."


def report_figures(
    result: JobResult, views: Sequence[CandidateView]
) -> list[tuple[str, str, Figure, list[PlotPoint]]]:
    """(id, caption, figure, plotted points) for each plot that has at least one candidate to show."""
    figs = []
    gates = {v.gate.allowed_drop for v in views if v.gate is not None}
    threshold = result.baseline_metric - gates.pop() if len(gates) == 1 else None
    acc = accuracy_speedup_points(result, views)
    if acc:
        fig = scatter_figure(
            acc,
            (1.0, result.baseline_metric),
            title=f"{result.metric_name} vs speedup on {result.target_profile}",
            xlabel="p50 speedup vs baseline (×, higher is better)",
            ylabel=f"{result.metric_name} (higher is better)",
            maximize=(True, True),
            threshold=threshold,
        )
        cap = (
            f"{result.metric_name} against p50 latency speedup on {result.target_profile}. "
            "Up and to the right is better. "
            + _front_caption(acc, (1.0, result.baseline_metric), (True, True))
        )
        figs.append(("plot-accuracy-speedup", cap, fig, acc))
    sl = size_latency_points(result, views)
    if sl:
        fig = scatter_figure(
            sl,
            (result.baseline_size_bytes / 1e6, result.baseline_p50_ms),
            title=f"Size vs latency on {result.target_profile}",
            xlabel="model size (MB, lower is better)",
            ylabel=f"p50 latency on {result.target_profile} (ms, lower is better)",
            maximize=(False, False),
        )
        cap = (
            f"Model size against p50 latency on {result.target_profile}. Down and to the left is better. "
            + _front_caption(sl, (result.baseline_size_bytes / 1e6, result.baseline_p50_ms), (False, False))
        )
        figs.append(("plot-size-latency", cap, fig, sl))
    return figs


def _png_base64(fig: Figure) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


# -- device table -----------------------------------------------------------------------------------
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


_DEVICE_CLASSES = {
    h: "num" for h in ("p50 ms", "p95 ms", "p99 ms", "Throughput /s", "CV p50", "Energy mJ (est.)")
}
_DEVICE_CLASSES["Budgets"] = "note"


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
    extra = "" if b.peak_rss_increase_mb is None else f"+{b.peak_rss_increase_mb:.1f} MB model, "
    return f"{extra}{b.peak_rss_mb:.0f} MB process"


def _budget_status(row: DeviceRow) -> str:
    if row.benchmark.budgets.is_empty():
        return "none set"
    if not row.budget_violations:
        return "within"
    note = " (not enforced on the baseline)" if row.candidate_key is None else ""
    return "over: " + "; ".join(row.budget_violations) + note


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
        _ms(b.p50_ms),
        _ms(b.p95_ms),
        _ms(b.p99_ms),
        f"{b.throughput_per_s:.0f}",
        f"{b.cv_p50:.2%}",
        others or "-",
        _peak(b),
        _macs(b),
        "-" if b.energy_mj_est is None else f"{b.energy_mj_est:.4f}",
        _budget_status(row),
    ]


DEVICE_NOTE = (
    "Each model measured in its own process with the profile's threads pinned, in rounds until the round "
    "medians agree (CV p50: their coefficient of variation). Peak memory: what the model added to the "
    "benchmark process (the budget's quantity) and the process's peak. MACs per sample from the ONNX graph "
    "(share in 8-bit integer arithmetic). Energy: an estimate per sample from the 45 nm per-operation "
    "figures of Horowitz (ISSCC 2014) for the MACs and one DRAM read of the weights per batch, not a "
    "measurement. "
    "Budgets block promotion of candidates only; pytorch_eager profiles measure only the baseline."
)


def _devices_html(result: JobResult) -> list[str]:
    if not result.devices:
        return []
    out = [
        "<section><h2>Devices</h2>",
        '<div class="table-wrap"><table id="devices"><thead><tr>',
        "".join(f"<th>{_e(h)}</th>" for h in DEVICE_HEADS),
        "</tr></thead><tbody>",
    ]
    for row in result.devices:
        cells = device_cells(row)
        cls = ' class="failed"' if row.budget_violations else ""
        out.append(
            f"<tr{cls}>"
            + "".join(
                f'<td class="{_DEVICE_CLASSES.get(h, "")}">{_e(c)}</td>'
                for h, c in zip(DEVICE_HEADS, cells, strict=True)
            )
            + "</tr>"
        )
    out += ["</tbody></table></div>", f'<p class="meta">{_e(DEVICE_NOTE)}</p></section>']
    return out


def _devices_markdown(result: JobResult) -> list[str]:
    if not result.devices:
        return []
    lines = [
        "## Devices",
        "",
        "| " + " | ".join(DEVICE_HEADS) + " |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---|---|---:|---|",
    ]
    lines += ["| " + " | ".join(_md(c) for c in device_cells(row)) + " |" for row in result.devices]
    return [*lines, "", _md(DEVICE_NOTE), ""]


# -- HTML -------------------------------------------------------------------------------------------
_CSS = """
:root { --pass: #15803d; --fail: #dc2626; --muted: #6b7280; --line: #e5e7eb; }
* { box-sizing: border-box; }
body { margin: 0; background: #f9fafb; color: #111827;
  font: 13px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1320px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 10px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
.meta { color: var(--muted); margin: 0; }
.verdict { margin: 18px 0; padding: 12px 16px; border-radius: 6px; font-size: 15px; font-weight: 600; }
.verdict.promoted { background: #ecfdf5; border-left: 5px solid var(--pass); }
.verdict.none { background: #fffbeb; border-left: 5px solid #d97706; }
dl.kv { display: grid; grid-template-columns: max-content auto; gap: 4px 18px; margin: 0; }
dl.kv dt { color: var(--muted); } dl.kv dd { margin: 0; font-variant-numeric: tabular-nums; }
.table-wrap { overflow-x: auto; background: #fff; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 7px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: #f3f4f6; font-weight: 600; white-space: nowrap; }
td.num { text-align: right; white-space: nowrap; }
td.label { min-width: 9em; max-width: 18em; overflow-wrap: anywhere; }
td.gate { min-width: 11em; max-width: 16em; } td.note { min-width: 14em; max-width: 30em; }
tr.promoted td { background: #ecfdf5; } tr.promoted td:first-child { box-shadow: inset 4px 0 var(--pass); }
tr.failed td { color: var(--muted); }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 12px; font-weight: 600;
  color: #fff; }
.badge.pass { background: var(--pass); } .badge.fail { background: var(--fail); }
.badge.skipped { background: #6b7280; }
.badge.promoted { background: #b45309; }
.detail { display: block; color: var(--muted); font-size: 12px; }
.error { color: var(--fail); white-space: pre-wrap; word-break: break-word; font-family: ui-monospace,
  SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
.plots { display: flex; flex-wrap: wrap; gap: 18px; }
figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px;
  flex: 1 1 560px; max-width: 660px; }
figure img { width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
a { color: #1d4ed8; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _link(text: str, url: str | None) -> str:
    return _e(text) if url is None else f'<a href="{_e(url)}">{_e(text)}</a>'


def _html_row(result: JobResult, v: CandidateView) -> str:
    r = v.row
    classes = " ".join(c for c in ("promoted" if v.promoted else "", "failed" if v.failed else "") if c)
    label = _link(r.label, run_url(result, r.run_id))
    if v.promoted:
        label += ' <span class="badge promoted">promoted</span>'
    badge = {"pass": "pass", "fail": "fail"}.get(r.gate, "skipped")
    gate = f'<span class="badge {badge}">{_e(r.gate)}</span>'
    detail = _gate_detail(v.gate) if r.gate in ("pass", "fail") else ""
    if detail:
        gate += f'<span class="detail">{_e(detail)}</span>'
    title = f' title="{_e(v.gate.reason)}"' if v.gate is not None else ""
    if v.failed:
        error = (r.error or "no error recorded")[:_MAX_ERROR]
        note = f'<span class="error">failed: {_e(error)}</span>'
    else:
        note = _e(r.note)
    cells = [
        f'<td class="label">{label}</td>',
        f"<td>{_e(r.status)}</td>",
        f'<td class="num">{_metric(r.metric)}</td>',
        f'<td class="num">{"-" if r.delta is None else _e(_points(r.delta))}</td>',
        f'<td class="gate"{title}>{gate}</td>',
        f'<td class="num">{_size(r.size_bytes)}</td>',
        f'<td class="num">{_e(_ratio(v))}</td>',
        f'<td class="num">{_ms(r.p50_ms)}</td>',
        f'<td class="num">{"-" if v.speedup is None else f"{v.speedup:.2f}×"}</td>',
        f"<td>{'yes' if r.eligible else 'no'}</td>",
        f'<td class="note">{note}</td>',
    ]
    cls = f' class="{classes}"' if classes else ""
    return f'<tr{cls} data-candidate="{_e(r.candidate_key)}">' + "".join(cells) + "</tr>"


def _render_html(result: JobResult, views: list[CandidateView], verdict: str) -> str:
    p = result.promotion
    heads = [
        "Candidate",
        "Status",
        result.metric_name,
        "Δ vs baseline",
        "Gate",
        "Size",
        "Size vs baseline",
        "p50 ms",
        "Speedup",
        "Eligible",
        "Note",
    ]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>squeezeflow report: {_e(result.job)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<header><h1>Compression report: {_e(result.job)}</h1>",
        f'<p class="meta">job key <code>{_e(result.job_key)}</code> · metric {_e(result.metric_name)} · '
        f"target profile {_e(result.target_profile)} · {_count(len(views), 'candidate')} · "
        f"wall time {result.seconds:.1f}s</p></header>",
        f'<p class="verdict {"promoted" if p.promoted else "none"}" id="verdict">{_e(verdict)}</p>',
        '<section><h2>Baseline</h2><dl class="kv">',
        f"<dt>{_e(result.metric_name)}</dt><dd>{_metric(result.baseline_metric)}</dd>",
        f"<dt>size</dt><dd>{_size(result.baseline_size_bytes)}</dd>",
        f"<dt>p50 / p95 on {_e(result.target_profile)}</dt>"
        f"<dd>{_ms(result.baseline_p50_ms)} ms / {_ms(result.baseline_p95_ms)} ms</dd>",
        "</dl></section>",
        "<section><h2>Candidates</h2>",
        '<div class="table-wrap"><table id="candidates"><thead><tr>',
        "".join(f"<th>{_e(h)}</th>" for h in heads),
        "</tr></thead><tbody>",
        *(_html_row(result, v) for v in views),
        "</tbody></table></div>",
        f'<p class="meta">Latency is measured on the target profile {_e(result.target_profile)}; '
        "speedup is the baseline's p50 over the candidate's. Δ is the candidate's metric minus the "
        "baseline's, in percentage points. Hover a gate verdict for the gate's full reasoning.</p></section>",
        *_devices_html(result),
    ]
    figs = report_figures(result, views)
    out.append("<section><h2>Trade-offs</h2>")
    if figs:
        out.append('<div class="plots">')
        for fig_id, cap, fig, pts in figs:
            plotted = {p.label for p in pts}
            left_out = [v.row.label for v in views if v.row.label not in plotted]
            extra = f" Not plotted (failed or not measured): {', '.join(left_out)}." if left_out else ""
            out.append(
                f'<figure id="{fig_id}"><img alt="{_e(cap)}" '
                f'src="data:image/png;base64,{_png_base64(fig)}">'
                f"<figcaption>{_e(cap + extra)}</figcaption></figure>"
            )
        out.append("</div>")
    else:
        out.append('<p class="meta">No candidate was built and benchmarked, so there is nothing to plot.</p>')
    out.append("</section>")
    parent = run_url(result, result.parent_run_id)
    out += [
        '<section><h2>Tracking</h2><dl class="kv">',
        f"<dt>MLflow</dt><dd><code>{_e(result.tracking_uri)}</code></dd>"
        if experiment_url(result) is None
        else f"<dt>MLflow</dt><dd>{_link(result.tracking_uri, experiment_url(result))}</dd>",
        f"<dt>experiment</dt><dd>{_link(result.experiment_id, experiment_url(result))}</dd>",
        f"<dt>parent run</dt><dd>{_link(result.parent_run_id, parent)}</dd>",
        f"<dt>registered model</dt><dd>{_e(p.model_name)} @{_e(p.alias)}</dd>",
        f"<dt>artifacts</dt><dd><code>{_e(result.artifacts)}</code></dd>",
        "</dl></section></main></body></html>",
    ]
    return "\n".join(out) + "\n"


# -- Markdown ---------------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}|#<>!~])")


def _md(text: object) -> str:
    """Text safe inside a Markdown table cell: one line, Markdown and HTML metacharacters escaped."""
    one_line = " ".join(str(text).split())
    return (
        _MD_SPECIAL.sub(r"\\\1", one_line.replace("&", "&amp;")).replace("\\<", "&lt;").replace("\\>", "&gt;")
    )


def _md_link(text: str, url: str | None) -> str:
    return _md(text) if url is None else f"[{_md(text)}](<{url}>)"


def _render_markdown(result: JobResult, views: list[CandidateView], verdict: str) -> str:
    p = result.promotion
    lines = [
        f"# Compression report: {_md(result.job)}",
        "",
        f"**{_md(verdict)}**",
        "",
        f"Job key `{result.job_key}`, metric {_md(result.metric_name)}, target profile "
        f"{_md(result.target_profile)}, {_count(len(views), 'candidate')}, wall time {result.seconds:.1f}s.",
        "",
        "## Baseline",
        "",
        f"- {_md(result.metric_name)}: {_metric(result.baseline_metric)}",
        f"- size: {_size(result.baseline_size_bytes)}",
        f"- p50 / p95 on {_md(result.target_profile)}: {_ms(result.baseline_p50_ms)} ms / "
        f"{_ms(result.baseline_p95_ms)} ms",
        "",
        "## Candidates",
        "",
        f"| Candidate | Status | {_md(result.metric_name)} | Δ vs baseline | Gate | Size | Size vs baseline "
        "| p50 ms | Speedup | Eligible | Note |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for v in views:
        r = v.row
        label = _md_link(r.label, run_url(result, r.run_id)) + (" **(promoted)**" if v.promoted else "")
        detail = _gate_detail(v.gate) if r.gate in ("pass", "fail") else ""
        gate = r.gate + (f" ({detail})" if detail else "")
        note = _note(v)[:_MAX_ERROR]
        cells = [
            label,
            _md(r.status),
            _metric(r.metric),
            "-" if r.delta is None else _points(r.delta),
            _md(gate),
            _size(r.size_bytes),
            _ratio(v),
            _ms(r.p50_ms),
            "-" if v.speedup is None else f"{v.speedup:.2f}×",
            "yes" if r.eligible else "no",
            _md(note),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Δ is the candidate's metric minus the baseline's, in percentage points. The HTML report has the "
        "accuracy/speedup and size/latency plots.",
        "",
        *_devices_markdown(result),
        "## Tracking",
        "",
        f"- MLflow: `{result.tracking_uri}` (experiment {_md(result.experiment_id)}, parent run "
        f"{_md_link(result.parent_run_id, run_url(result, result.parent_run_id))})",
        f"- registered model: {_md(p.model_name)} @{_md(p.alias)}",
        f"- artifacts: `{result.artifacts}`",
        "",
    ]
    return "\n".join(lines)


# -- public API -------------------------------------------------------------------------------------
def render_report(result: JobResult, outcomes: list[CandidateOutcome] | None = None) -> tuple[str, str]:
    """The job's report as (HTML, Markdown). ``outcomes`` add the gates' confidence bounds."""
    views = candidate_views(result, outcomes)
    verdict = verdict_sentence(result, views)
    return _render_html(result, views, verdict), _render_markdown(result, views, verdict)


def publish_report(
    result: JobResult,
    outcomes: list[CandidateOutcome] | None,
    store: ArtifactStore,
    workdir: Path,
) -> tuple[ArtifactRef, ArtifactRef]:
    """Render the report and store both documents (content-addressed, ``.html`` and ``.md``).

    Rendering errors propagate as they are; a failure to write the files or to store them is an
    :class:`InfrastructureError`.
    """
    html_text, md_text = render_report(result, outcomes)
    out = workdir / "reports"
    try:
        out.mkdir(parents=True, exist_ok=True)
        html_path = out / f"{result.job_key}.html"
        md_path = out / f"{result.job_key}.md"
        html_path.write_text(html_text, encoding="utf-8")
        md_path.write_text(md_text, encoding="utf-8")
        refs = store.put_file(html_path, suffix=".html"), store.put_file(md_path, suffix=".md")
    except OSError as err:
        raise InfrastructureError(f"cannot store the job report in {store.root}: {err}") from err
    log.info("job report: %s", refs[0].uri)
    return refs
