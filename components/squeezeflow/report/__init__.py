"""Every view of a job result, each made once.

- `views`: what every view shows, computed once (derived ratios, the verdict sentence, badges, cells);
- `figures`: the accuracy/speedup and size/latency plots;
- `html_page`: the self-contained HTML report;
- `markdown`: the Markdown report, the front doors' summary and the gate's table;
- `terminal`: the CLI's tables.

`publish_report` renders the report once, stores both documents and hands back their text, so a caller that
also shows the report (the MLflow run, a Kubeflow step) never downloads what it just uploaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from squeezeflow.errors import InfrastructureError
from squeezeflow.report.figures import (
    PlotPoint,
    accuracy_speedup_points,
    report_figures,
    scatter_figure,
    size_latency_points,
)
from squeezeflow.report.html_page import html_page, summary_html
from squeezeflow.report.markdown import gate_markdown, markdown_document, render_markdown, summary_markdown
from squeezeflow.report.terminal import device_table, load_hint, print_summary, summary_table
from squeezeflow.report.views import (
    DEVICE_HEADS,
    DEVICE_NOTE,
    CandidateView,
    candidate_views,
    device_cells,
    experiment_url,
    gate_summary,
    pareto_front,
    run_url,
    verdict_sentence,
)
from squeezeflow.results import CandidateOutcome, JobResult
from squeezeflow.store.artifacts import ArtifactRef, ArtifactStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishedReport:
    """The report's two documents as stored, and their text."""

    html: str
    markdown: str
    html_ref: ArtifactRef
    markdown_ref: ArtifactRef


def render_report(result: JobResult, outcomes: list[CandidateOutcome] | None = None) -> tuple[str, str]:
    """The job's report as (HTML, Markdown). ``outcomes`` add the gates' confidence bounds."""
    views = candidate_views(result, outcomes)
    verdict = verdict_sentence(result, views)
    return html_page(result, views, verdict), markdown_document(result, views, verdict)


def publish_report(
    result: JobResult,
    outcomes: list[CandidateOutcome] | None,
    store: ArtifactStore,
    workdir: Path,
) -> PublishedReport:
    """Render the report, store both documents (content-addressed, ``.html`` and ``.md``) and return them
    with their text.

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
        html_ref, md_ref = store.put_file(html_path, suffix=".html"), store.put_file(md_path, suffix=".md")
    except OSError as err:
        raise InfrastructureError(f"cannot store the job report in {store.root}: {err}") from err
    log.info("job report: %s", html_ref.uri)
    return PublishedReport(html_text, md_text, html_ref, md_ref)


__all__ = [
    "DEVICE_HEADS",
    "DEVICE_NOTE",
    "CandidateView",
    "PlotPoint",
    "PublishedReport",
    "accuracy_speedup_points",
    "candidate_views",
    "device_cells",
    "device_table",
    "experiment_url",
    "gate_markdown",
    "gate_summary",
    "load_hint",
    "pareto_front",
    "print_summary",
    "publish_report",
    "render_markdown",
    "render_report",
    "report_figures",
    "run_url",
    "scatter_figure",
    "size_latency_points",
    "summary_html",
    "summary_markdown",
    "summary_table",
    "verdict_sentence",
]
