"""The report as one self-contained HTML page.

Everything is inline (CSS, plots as base64 PNG): an Airflow task can link to it and a Kubeflow run view can
display it without fetching anything else. The only external references are links to the job's MLflow
runs, and only when the tracking server is reachable over http(s). Every piece of text that came from a
user or a pass (job and candidate labels, errors, reasons) is escaped before it reaches the page.
"""

from __future__ import annotations

import html

from squeezeflow.report.figures import png_base64, report_figures
from squeezeflow.report.views import (
    BOUND_NOTE,
    DEVICE_NOTE,
    MAX_ERROR,
    NUMERIC_DEVICE_HEADS,
    CandidateView,
    badge,
    count,
    delta_text,
    device_heads,
    device_row,
    experiment_url,
    gate_detail,
    metric_text,
    ms,
    run_url,
    shows_bound,
    size_text,
    size_vs_baseline,
    speedup_text,
    was_judged,
)
from squeezeflow.results import JobResult

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


def _device_class(head: str) -> str:
    if head in NUMERIC_DEVICE_HEADS:
        return "num"
    return "note" if head == "Budgets" else ""


def _devices(result: JobResult) -> list[str]:
    if not result.devices:
        return []
    heads = device_heads(result.devices)
    out = [
        "<section><h2>Devices</h2>",
        '<div class="table-wrap"><table id="devices"><thead><tr>',
        "".join(f"<th>{_e(h)}</th>" for h in heads),
        "</tr></thead><tbody>",
    ]
    for row in result.devices:
        cls = ' class="failed"' if row.budget_violations else ""
        out.append(
            f"<tr{cls}>"
            + "".join(
                f'<td class="{_device_class(h)}">{_e(c)}</td>'
                for h, c in zip(heads, device_row(row, heads), strict=True)
            )
            + "</tr>"
        )
    out += ["</tbody></table></div>", f'<p class="meta">{_e(DEVICE_NOTE)}</p></section>']
    return out


def _row(result: JobResult, v: CandidateView) -> str:
    r = v.row
    classes = " ".join(c for c in ("promoted" if v.promoted else "", "failed" if v.failed else "") if c)
    label = _link(r.label, run_url(result, r.run_id))
    if v.promoted:
        label += ' <span class="badge promoted">promoted</span>'
    gate = f'<span class="badge {badge(r.gate)}">{_e(r.gate)}</span>'
    detail = gate_detail(v.gate) if was_judged(r.gate) else ""
    if detail:
        gate += f'<span class="detail">{_e(detail)}</span>'
    title = f' title="{_e(v.gate.reason)}"' if v.gate is not None else ""
    if v.failed:
        error = (r.error or "no error recorded")[:MAX_ERROR]
        note = f'<span class="error">failed: {_e(error)}</span>'
    else:
        note = _e(r.note)
    cells = [
        f'<td class="label">{label}</td>',
        f'<td class="num">{metric_text(r.metric)}</td>',
        f'<td class="num">{_e(delta_text(r.delta))}</td>',
        f'<td class="gate"{title}>{gate}</td>',
        f'<td class="num">{size_text(r.size_bytes)}</td>',
        f'<td class="num">{_e(size_vs_baseline(v))}</td>',
        f'<td class="num">{ms(r.p50_ms)}</td>',
        f'<td class="num">{speedup_text(v)}</td>',
        f"<td>{'yes' if r.eligible else 'no'}</td>",
        f'<td class="note">{note}</td>',
    ]
    cls = f' class="{classes}"' if classes else ""
    return f'<tr{cls} data-candidate="{_e(r.candidate_key)}">' + "".join(cells) + "</tr>"


def _plots(result: JobResult, views: list[CandidateView]) -> list[str]:
    figs = report_figures(result, views)
    out = ["<section><h2>Trade-offs</h2>"]
    if figs:
        out.append('<div class="plots">')
        for fig_id, cap, fig, pts in figs:
            plotted = {p.label for p in pts}
            left_out = [v.row.label for v in views if v.row.label not in plotted]
            extra = f" Not plotted (failed or not measured): {', '.join(left_out)}." if left_out else ""
            out.append(
                f'<figure id="{fig_id}"><img alt="{_e(cap)}" '
                f'src="data:image/png;base64,{png_base64(fig)}">'
                f"<figcaption>{_e(cap + extra)}</figcaption></figure>"
            )
        out.append("</div>")
    else:
        out.append('<p class="meta">No candidate was built and benchmarked, so there is nothing to plot.</p>')
    out.append("</section>")
    return out


def html_page(result: JobResult, views: list[CandidateView], verdict: str) -> str:
    """The whole page, from the views and the verdict sentence (`squeezeflow.report.views`)."""
    p = result.promotion
    bound = shows_bound(views)
    heads = [
        "Candidate",
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
        f"target profile {_e(result.target_profile)} · {count(len(views), 'candidate')} · "
        f"wall time {result.seconds:.1f}s</p></header>",
        f'<p class="verdict {"promoted" if p.promoted else "none"}" id="verdict">{_e(verdict)}</p>',
        '<section><h2>Baseline</h2><dl class="kv">',
        f"<dt>{_e(result.metric_name)}</dt><dd>{metric_text(result.baseline_metric)}</dd>",
        f"<dt>size</dt><dd>{size_text(result.baseline_size_bytes)}</dd>",
        f"<dt>p50 / p95 on {_e(result.target_profile)}</dt>"
        f"<dd>{ms(result.baseline_p50_ms)} ms / {ms(result.baseline_p95_ms)} ms</dd>",
        "</dl></section>",
        "<section><h2>Candidates</h2>",
        '<div class="table-wrap"><table id="candidates"><thead><tr>',
        "".join(
            f'<th title="{_e(BOUND_NOTE)}">{_e(h)}</th>' if h == "Gate" and bound else f"<th>{_e(h)}</th>"
            for h in heads
        ),
        "</tr></thead><tbody>",
        *(_row(result, v) for v in views),
        "</tbody></table></div>",
        f'<p class="meta">Latency is measured on the target profile {_e(result.target_profile)}; '
        "speedup is the baseline's p50 over the candidate's, or, with a 95% confidence interval in "
        "brackets, measured interleaved with the baseline in one process. Δ is the candidate's metric "
        "minus the "
        "baseline's, in percentage points. Hover a gate verdict for the gate's full reasoning.</p>",
        f'<p class="meta" id="bound-note">{_e(BOUND_NOTE)}</p>' if bound else "",
        "</section>",
        *_devices(result),
        *_plots(result, views),
    ]
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


def summary_html(result: JobResult) -> str:
    """The job's summary (`squeezeflow.report.markdown.summary_markdown`) as a bare page, for a front door
    that must show a page when the report itself could not be rendered."""
    from squeezeflow.report.markdown import summary_markdown

    return (
        f"<!doctype html><meta charset='utf-8'><title>{_e(result.job)}</title>"
        f"<pre>{_e(summary_markdown(result))}</pre>"
    )
