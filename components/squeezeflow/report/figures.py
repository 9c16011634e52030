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
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PASS_COLOUR = "#15803d"
FAIL_COLOUR = "#dc2626"
SKIPPED_COLOUR = "#6b7280"
PROMOTED_COLOUR = "#f59e0b"
FRONT_COLOUR = "#6b7280"
SLOWER = "not evaluated: slower"

# Where a point's label may go, tried in this order: (dx, dy) in points from the point, and the text's
# alignment there, so that the text always starts on the side away from the marker.
_OFFSETS: list[tuple[float, float, str, str]] = [
    (dx * k, dy * k, ha, va)
    for k in (1.0, 2.2, 3.4)
    for dx, dy, ha, va in [
        (7, 5, "left", "bottom"),
        (7, -5, "left", "top"),
        (-7, 5, "right", "bottom"),
        (-7, -5, "right", "top"),
        (0, 8, "center", "bottom"),
        (0, -8, "center", "top"),
    ]
]


@dataclass(frozen=True)
class PlotPoint:
    label: str
    x: float
    y: float
    passed: bool
    promoted: bool
    verdict: str = ""

    @property
    def skipped(self) -> bool:
        """Measured and found slower than the baseline, so never sent to the gate."""
        return self.verdict == SLOWER


def accuracy_speedup_points(result: JobResult, views: Sequence[CandidateView]) -> list[PlotPoint]:
    """Built candidates with a metric and a target benchmark: (speedup vs baseline, metric)."""
    return [
        PlotPoint(v.row.label, v.speedup, v.row.metric, v.row.gate == "pass", v.promoted, v.row.gate)
        for v in views
        if not v.failed and v.speedup is not None and v.row.metric is not None
    ]


def size_latency_points(result: JobResult, views: Sequence[CandidateView]) -> list[PlotPoint]:
    """Built candidates with a size and a target benchmark: (size in MB, p50 in ms)."""
    return [
        PlotPoint(
            v.row.label, v.row.size_bytes / 1e6, v.row.p50_ms, v.row.gate == "pass", v.promoted, v.row.gate
        )
        for v in views
        if not v.failed and v.row.size_bytes is not None and v.row.p50_ms is not None
    ]


def front_of(
    points: Sequence[PlotPoint], baseline: tuple[float, float], maximize: tuple[bool, bool]
) -> list[tuple[str, float, float]]:
    """The Pareto front over the baseline and the candidates that passed the gate (a candidate that failed
    it, or was never sent to it, cannot be promoted, so it does not shape the trade-off on offer), as
    (label, x, y) ordered by x."""
    eligible = [(p.label, p.x, p.y) for p in points if p.passed] + [("baseline", *baseline)]
    return [eligible[i] for i in pareto_front([(x, y) for _, x, y in eligible], maximize)]


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
    """Candidates marked by gate verdict, the promoted one ringed, the baseline marked and the Pareto front
    (over the baseline and the gate-passing candidates, `front_of`) drawn. Each label is placed where it
    stays inside the axes and clear of the other labels and markers (`_place_labels`); the legend sits
    below the axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)

    front = front_of(points, baseline, maximize)
    if len(front) > 1:
        ax.plot(
            [x for _, x, _ in front],
            [y for _, _, y in front],
            ls="--",
            lw=1.2,
            color=FRONT_COLOUR,
            zorder=1,
            label="Pareto front (gate passed)",
        )
    if threshold is not None:
        ax.axhline(threshold, ls=":", lw=1.2, color=FAIL_COLOUR, zorder=1, label="gate: allowed drop")
    groups = [
        ([p for p in points if p.passed], dict(s=46, marker="o", color=PASS_COLOUR, label="gate passed")),
        (
            [p for p in points if not p.passed and not p.skipped],
            dict(s=52, marker="X", color=FAIL_COLOUR, label="gate failed"),
        ),
        (
            [p for p in points if p.skipped],
            dict(s=40, marker="s", color=SKIPPED_COLOUR, label=SLOWER),
        ),
    ]
    for members, style in groups:
        if members:
            ax.scatter([p.x for p in members], [p.y for p in members], zorder=3, **style)  # type: ignore[arg-type]
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
    ax.margins(0.12)
    fig.legend(loc="outside lower center", ncols=3, fontsize=8, framealpha=0.85, markerscale=0.7)
    _place_labels(fig, ax, points, baseline)
    return fig


def _place_labels(fig: Figure, ax: Axes, points: Sequence[PlotPoint], baseline: tuple[float, float]) -> None:
    """Label every point, greedily: the promoted one first, then left to right, each at the first offset
    (`_OFFSETS`) whose text lies inside the axes and overlaps no label placed before it nor another
    point's marker; failing that, at the offset inside the axes that overlaps least. The layout is
    drawn once and then frozen, so the axes do not move under the labels when the figure is saved."""
    from matplotlib.transforms import Bbox

    fig.canvas.draw()
    fig.set_layout_engine("none")
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    frame = ax.get_window_extent(renderer).shrunk(0.99, 0.99)
    # Pixels around each marker that labels keep clear of (the promoted ring is wider), the point's own
    # included: a label starts beside its marker, never on it.
    pads = [14.0 if p.promoted else 6.0 for p in points] + [7.0]
    marks = [ax.transData.transform((p.x, p.y)) for p in points] + [ax.transData.transform(baseline)]
    taken = [Bbox.from_extents(x - r, y - r, x + r, y + r) for (x, y), r in zip(marks, pads, strict=True)]

    def overlap(box: Bbox, others: Sequence[Bbox]) -> float:
        total = 0.0
        for o in others:
            w = min(box.x1, o.x1) - max(box.x0, o.x0)
            h = min(box.y1, o.y1) - max(box.y0, o.y0)
            total += max(w, 0.0) * max(h, 0.0)
        return total

    order = sorted(range(len(points)), key=lambda i: (not points[i].promoted, points[i].x, points[i].y))
    for i in order:
        p = points[i]
        best: tuple[float, float, str, str] | None = None
        best_cost = float("inf")
        for dx, dy, ha, va in _OFFSETS:
            ann = ax.annotate(
                short(p.label),
                (p.x, p.y),
                xytext=(dx, dy),
                textcoords="offset points",
                ha=ha,
                va=va,
                fontsize=8,
                fontweight="bold" if p.promoted else "normal",
                parse_math=False,
            )
            box = ann.get_window_extent(renderer)
            ann.remove()
            inside = frame.containsx(box.x0) and frame.containsx(box.x1)
            inside = inside and frame.containsy(box.y0) and frame.containsy(box.y1)
            cost = overlap(box, taken) + (0.0 if inside else 1e9)
            if cost < best_cost:
                best, best_cost = (dx, dy, ha, va), cost
            if cost == 0:
                break
        assert best is not None
        dx, dy, ha, va = best
        ann = ax.annotate(
            short(p.label),
            (p.x, p.y),
            xytext=(dx, dy),
            textcoords="offset points",
            ha=ha,
            va=va,
            fontsize=8,
            fontweight="bold" if p.promoted else "normal",
            parse_math=False,
            annotation_clip=True,
        )
        ann.set_clip_on(True)  # a label that found no room anywhere is cut at the frame, never past it
        taken.append(ann.get_window_extent(renderer))


def _front_caption(
    points: Sequence[PlotPoint], baseline: tuple[float, float], maximize: tuple[bool, bool]
) -> str:
    labels = [label for label, _, _ in front_of(points, baseline, maximize)]
    if labels == ["baseline"]:
        return (
            "Pareto front, over the baseline and the candidates that passed the accuracy gate only: the "
            "baseline alone (no candidate that passed the gate improves on it)."
        )
    dashed = " (dashed)" if len(labels) > 1 else ""
    return (
        f"Pareto front{dashed}, over the baseline and the candidates that passed the accuracy gate only: "
        + ", ".join(labels)
        + "."
    )


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
