"""The job result as Markdown: the full report (stored with the job, a Kubeflow run's ``report_markdown``),
the short summary the front doors show (an Airflow XCom and task log, a Kubeflow run without a stored
report), and the gate's table (a Kubeflow search's ``summary``). The candidates table is one function,
so every door shows the same table for the same result.

Every cell is escaped (`md`): a pipe or markup in a label or an error cannot break a table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from squeezeflow.report.views import (
    BOUND_NOTE,
    DEVICE_NOTE,
    MAX_ERROR,
    NUMERIC_DEVICE_HEADS,
    CandidateView,
    candidate_views,
    count,
    delta_text,
    device_heads,
    device_row,
    gate_detail,
    gate_summary,
    metric_text,
    ms,
    note_text,
    run_url,
    shows_bound,
    size_text,
    size_vs_baseline,
    speedup_text,
    verdict_sentence,
    was_judged,
)
from squeezeflow.results import CandidateOutcome, JobResult

_SPECIAL = re.compile(r"([\\`*_\[\]{}|#<>!~])")


def md(text: object) -> str:
    """Text safe inside a Markdown table cell: one line, Markdown and HTML metacharacters escaped."""
    one_line = " ".join(str(text).split())
    return _SPECIAL.sub(r"\\\1", one_line.replace("&", "&amp;")).replace("\\<", "&lt;").replace("\\>", "&gt;")


def _link(text: str, url: str | None) -> str:
    return md(text) if url is None else f"[{md(text)}](<{url}>)"


def _table(heads: Sequence[str], align: str, rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(heads) + " |", align, *("| " + " | ".join(r) + " |" for r in rows)]


def candidates_table(result: JobResult, views: Sequence[CandidateView]) -> list[str]:
    """The candidates table's lines (header, alignment, one row per candidate)."""
    heads = [
        "Candidate",
        md(result.metric_name),
        "Δ vs baseline",
        "Gate",
        "Size",
        "Size vs baseline",
        "p50 ms",
        "Speedup",
        "Eligible",
        "Note",
    ]
    rows = []
    for v in views:
        r = v.row
        label = _link(r.label, run_url(result, r.run_id)) + (" **(promoted)**" if v.promoted else "")
        detail = gate_detail(v.gate) if was_judged(r.gate) else ""
        rows.append(
            [
                label,
                metric_text(r.metric),
                delta_text(r.delta),
                md(r.gate + (f" ({detail})" if detail else "")),
                size_text(r.size_bytes),
                size_vs_baseline(v),
                ms(r.p50_ms),
                speedup_text(v),
                "yes" if r.eligible else "no",
                md(note_text(v)[:MAX_ERROR]),
            ]
        )
    return _table(heads, "|---|---:|---:|---|---:|---:|---:|---:|---|---|", rows)


def _bound_note(views: Sequence[CandidateView]) -> list[str]:
    return [md(BOUND_NOTE), ""] if shows_bound(views) else []


def _devices(result: JobResult) -> list[str]:
    if not result.devices:
        return []
    heads = device_heads(result.devices)
    align = "|" + "".join("---:|" if h in NUMERIC_DEVICE_HEADS else "---|" for h in heads)
    rows = [[md(c) for c in device_row(row, heads)] for row in result.devices]
    return ["## Devices", "", *_table(heads, align, rows), "", md(DEVICE_NOTE), ""]


def _baseline(result: JobResult) -> list[str]:
    return [
        f"- {md(result.metric_name)}: {metric_text(result.baseline_metric)}",
        f"- size: {size_text(result.baseline_size_bytes)}",
        f"- p50 / p95 on {md(result.target_profile)}: {ms(result.baseline_p50_ms)} ms / "
        f"{ms(result.baseline_p95_ms)} ms",
    ]


def _heading(result: JobResult, views: Sequence[CandidateView], verdict: str) -> list[str]:
    return [
        f"# Compression report: {md(result.job)}",
        "",
        f"**{md(verdict)}**",
        "",
        f"Job key `{result.job_key}`, metric {md(result.metric_name)}, target profile "
        f"{md(result.target_profile)}, {count(len(views), 'candidate')}, wall time {result.seconds:.1f}s.",
        "",
    ]


def markdown_document(result: JobResult, views: list[CandidateView], verdict: str) -> str:
    """The full report, from the views and the verdict sentence (`squeezeflow.report.views`)."""
    p = result.promotion
    lines = [
        *_heading(result, views, verdict),
        "## Baseline",
        "",
        *_baseline(result),
        "",
        "## Candidates",
        "",
        *candidates_table(result, views),
        "",
        "Δ is the candidate's metric minus the baseline's, in percentage points. The HTML report has the "
        "accuracy/speedup and size/latency plots.",
        "",
        *_bound_note(views),
        *_devices(result),
        "## Tracking",
        "",
        f"- MLflow: `{result.tracking_uri}` (experiment {md(result.experiment_id)}, parent run "
        f"{_link(result.parent_run_id, run_url(result, result.parent_run_id))})",
        f"- registered model: {md(p.model_name)} @{md(p.alias)}",
        f"- artifacts: `{result.artifacts}`",
        "",
    ]
    return "\n".join(lines)


def render_markdown(result: JobResult, outcomes: Sequence[CandidateOutcome] | None = None) -> str:
    """The full Markdown report. ``outcomes`` add the gates' confidence bounds."""
    views = candidate_views(result, outcomes)
    return markdown_document(result, views, verdict_sentence(result, views))


def summary_markdown(result: JobResult, outcomes: Sequence[CandidateOutcome] | None = None) -> str:
    """The short summary a front door shows (an Airflow XCom and task log; a Kubeflow run whose report
    was not stored): the verdict, the baseline and the candidates table, the same as the report's."""
    views = candidate_views(result, outcomes)
    lines = [
        *_heading(result, views, verdict_sentence(result, views)),
        *_baseline(result),
        "",
        *candidates_table(result, views),
        "",
        *_bound_note(views),
    ]
    if result.report_html:
        lines += [f"Full report: `{result.report_html}`", ""]
    return "\n".join(lines)


def gate_markdown(outcomes: Sequence[CandidateOutcome]) -> str:
    """The search's gate results: one line, then a row per candidate with its verdict (`verdict_of`),
    metric, drop and the gate's reason."""
    from squeezeflow.search.policy import verdict_of

    line = gate_summary([o.gate for o in outcomes])
    rows = [
        [
            md(o.candidate.label),
            md(verdict_of(o)),
            "" if o.gate.candidate_metric is None else f"{o.gate.candidate_metric:.4f}",
            "" if o.gate.drop is None else f"{o.gate.drop:+.4f}",
            md(o.gate.reason),
        ]
        for o in outcomes
    ]
    table = _table(["candidate", "verdict", "metric", "drop", "reason"], "|---|---|---|---|---|", rows)
    return f"# Accuracy gate\n\n{line}\n\n" + "\n".join(table) + "\n"
