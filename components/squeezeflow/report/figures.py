"""The report's plots: accuracy against speedup and size against latency, as matplotlib figures (imported
only when a figure is drawn) and as base64 PNG for a self-contained page."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from squeezeflow.report.views import CandidateView, pareto_front, short
from squeezeflow.results import JobResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PASS_COLOUR = "#15803d"
FAIL_COLOUR = "#dc2626"
PROMOTED_COLOUR = "#f59e0b"
FRONT_COLOUR = "#6b7280"


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
            color=FRONT_COLOUR,
            zorder=1,
            label="Pareto front",
        )
    if threshold is not None:
        ax.axhline(threshold, ls=":", lw=1.2, color=FAIL_COLOUR, zorder=1, label="gate: allowed drop")
    passed = [p for p in points if p.passed]
    failed = [p for p in points if not p.passed]
    if passed:
        ax.scatter(
            [p.x for p in passed],
            [p.y for p in passed],
            s=46,
            marker="o",
            color=PASS_COLOUR,
            zorder=3,
            label="gate passed",
        )
    if failed:
        ax.scatter(
            [p.x for p in failed],
            [p.y for p in failed],
            s=52,
            marker="X",
            color=FAIL_COLOUR,
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
            edgecolors=PROMOTED_COLOUR,
            linewidths=2.5,
            zorder=4,
            label="promoted",
        )
    ax.scatter([baseline[0]], [baseline[1]], s=70, marker="D", color="black", zorder=3, label="baseline")
    for p in points:
        ax.annotate(
            short(p.label),
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


def png_base64(fig: Figure) -> str:
    """The figure as a PNG, base64-encoded (no timestamp or software tag: the same figure, the same bytes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")
