"""The job result in a terminal: the candidates and device tables (rich) and the promotion, for the CLI and
for task logs. Ratios and cells come from `squeezeflow.report.views`, as in every other view."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from squeezeflow.report.views import DEVICE_HEADS, candidate_views, device_cells, ms, speedup_text
from squeezeflow.results import JobResult


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB"


def summary_table(result: JobResult) -> Table:
    """The baseline and one row per candidate: metric, size, latency, how much smaller and faster, the gate
    verdict (`verdict_of`'s word, as in every table) and the note (why eligible or not)."""
    t = Table(title=f"squeezeflow job {result.job} ({result.metric_name}, target {result.target_profile})")
    for col, just in [
        ("candidate", "left"),
        (result.metric_name, "right"),
        ("delta", "right"),
        ("size", "right"),
        ("smaller", "right"),
        ("p50 ms", "right"),
        ("p95 ms", "right"),
        ("faster", "right"),
        ("gate", "center"),
        ("note", "left"),
    ]:
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    t.add_row(
        "baseline (fp32 ONNX)",
        f"{result.baseline_metric:.4f}",
        "",
        _mb(result.baseline_size_bytes),
        "1.0x",
        ms(result.baseline_p50_ms),
        ms(result.baseline_p95_ms),
        "1.00x",
        "",
        "reference",
    )
    for v in candidate_views(result):
        r = v.row
        smaller = "-" if v.times_smaller is None else f"{v.times_smaller:.1f}x"
        faster = speedup_text(v, "x")
        style = "bold green" if r.note == "promoted" else None
        t.add_row(
            r.label,
            "-" if r.metric is None else f"{r.metric:.4f}",
            "-" if r.delta is None else f"{r.delta * 100:+.2f} pt",
            _mb(r.size_bytes),
            smaller,
            ms(r.p50_ms),
            ms(r.p95_ms),
            faster,
            r.gate,
            r.note,
            style=style,
        )
    return t


def device_table(result: JobResult) -> Table:
    """The baseline and each measured candidate on every device profile, with budget status."""
    t = Table(title="device profiles (energy: per-operation estimate, not measured)")
    shown = ("Model", "Profile", "p50 ms", "p95 ms", "CV p50", "Peak memory", "Energy mJ (est.)", "Budgets")
    for col in shown:
        t.add_column(
            col, justify="left" if col in ("Model", "Profile", "Peak memory", "Budgets") else "right"
        )
    for row in result.devices:
        cells = dict(zip(DEVICE_HEADS, device_cells(row), strict=True))
        t.add_row(*(cells[c] for c in shown), style="red" if row.budget_violations else None)
    return t


def load_hint(tracking_uri: str, model_name: str, alias: str) -> str:
    """A shell command that loads the promoted model as printed, from any directory: MLflow's default
    tracking URI is not the job's, and a bare ``mlflow.pyfunc.load_model`` would look for the model in a
    new ``mlflow.db`` of the current directory. It prints what ``predict`` returns (label, scores, logits;
    the input has no schema, as it takes a sample or a batch). A URI whose password was redacted says
    where it goes."""
    import shlex

    code = (
        f'import mlflow; m = mlflow.pyfunc.load_model("models:/{model_name}@{alias}"); '
        "print(m.metadata.get_output_schema())"
    )
    python = shlex.quote(sys.executable)
    hint = f"MLFLOW_TRACKING_URI={shlex.quote(tracking_uri)} {python} -c {shlex.quote(code)}"
    if ":***@" in tracking_uri:
        hint += "  (put the password back in place of ***)"
    return hint


def print_summary(result: JobResult, console: Console | None = None) -> None:
    """Both tables, the search's rounds, the promotion (and how to load it) and where everything is."""
    # Wide enough for the table when output is captured (CI logs, Airflow task logs).
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    console.print(summary_table(result))
    if result.search_rounds:
        built = len(result.candidates)
        console.print(
            f"search: {built} candidate{'s' if built != 1 else ''} built in {result.search_rounds} "
            f"round{'s' if result.search_rounds != 1 else ''}"
            + (f"; stopped: {result.search_stop}" if result.search_stop else ""),
            markup=False,
            highlight=False,
        )
    if result.devices:
        console.print(device_table(result))
    p = result.promotion
    if p.promoted:
        console.print(
            f"[bold green]Promoted[/] {p.candidate_label} -> registered model [bold]{p.model_name}[/] "
            f"version {p.version}, alias @{p.alias}"
            + (f" (was version {p.previous_version})" if p.previous_version else "")
        )
        console.print(
            f"  load it with: {load_hint(result.tracking_uri, p.model_name, p.alias)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(f"[bold yellow]Nothing promoted[/]: {p.reason}")
    console.print(
        f"Tracking: {result.tracking_uri} (experiment {result.experiment_id}, run {result.parent_run_id})"
    )
    if result.tracking_uri.startswith("sqlite:"):
        console.print(f"  browse it with: mlflow ui --backend-store-uri {result.tracking_uri}")
    console.print(f"Artifacts: {result.artifacts}    wall time {result.seconds:.1f}s")
    if result.report_html:
        console.print(f"Report: {result.report_html}", markup=False, highlight=False, soft_wrap=True)
