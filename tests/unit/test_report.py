"""The job report: verdict, candidate table, escaping, plots and links, rendered from hand-built results."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from squeezeflow.errors import InfrastructureError
from squeezeflow.report import (
    accuracy_speedup_points,
    candidate_views,
    pareto_front,
    publish_report,
    render_report,
    report_figures,
    size_latency_points,
)
from squeezeflow.results import (
    BatchLatency,
    BenchmarkResult,
    CandidateOutcome,
    CandidateResult,
    CandidateRow,
    DeviceRow,
    GateResult,
    JobResult,
    PromotionResult,
)
from squeezeflow.spec.search import Recipe
from squeezeflow.store.artifacts import ArtifactRef, LocalStore

BASE_SIZE = 1_000_000
BASE_P50 = 2.0


def row(label: str, key: str, **kw: object) -> CandidateRow:
    fields: dict[str, object] = {
        "label": label,
        "candidate_key": key,
        "status": "ok",
        "error": None,
        "metric": 0.92,
        "delta": -0.002,
        "size_bytes": 260_000,
        "p50_ms": 1.0,
        "p95_ms": 1.2,
        "gate": "pass",
        "eligible": True,
        "note": "eligible",
        "run_id": f"run-{key}",
        "model_id": f"m-{key}",
    }
    fields.update(kw)
    return CandidateRow.model_validate(fields)


def promotion(promoted: bool, key: str | None = None, label: str | None = None) -> PromotionResult:
    return PromotionResult(
        key="p1",
        promoted=promoted,
        reason="promoted the fastest eligible candidate"
        if promoted
        else "no candidate passed the accuracy gate",
        candidate_key=key,
        candidate_label=label,
        model_name="animal-cnn",
        alias="champion",
        version="3" if promoted else None,
        previous_version="2" if promoted else None,
    )


def job(
    rows: list[CandidateRow], promo: PromotionResult, tracking_uri: str = "sqlite:////tmp/m.db"
) -> JobResult:
    return JobResult(
        job="animal-cnn-compress",
        job_key="jk123",
        metric_name="top1_accuracy",
        baseline_metric=0.922,
        baseline_size_bytes=BASE_SIZE,
        baseline_p50_ms=BASE_P50,
        baseline_p95_ms=2.4,
        target_profile="local-cpu",
        candidates=rows,
        promotion=promo,
        tracking_uri=tracking_uri,
        artifacts="/tmp/artifacts",
        parent_run_id="parent-run",
        experiment_id="7",
        seconds=42.0,
    )


def outcome(r: CandidateRow, passed: bool, drop_upper: float | None) -> CandidateOutcome:
    cand = CandidateResult(
        key=r.candidate_key,
        job_key="jk123",
        recipe=Recipe(name="int8-static", steps=[{"name": "ort_static_int8", "params": {}}]),
        recipe_key="rk",
        status="failed" if r.status == "failed" else "ok",
        error=r.error,
        run_id=r.run_id,
        seconds=1.0,
    )
    gate = GateResult(
        key=f"g-{r.candidate_key}",
        candidate_key=r.candidate_key,
        candidate_sha256=None,
        baseline_sha256="b",
        dataset_sha256="d",
        passed=passed,
        reason="within tolerance" if passed else "exceeds the allowed drop",
        metric_name="top1_accuracy",
        baseline_metric=0.922,
        candidate_metric=r.metric,
        drop=None if r.delta is None else -r.delta,
        allowed_drop=0.01,
        n=1500,
        agreement=0.99,
        drop_upper=drop_upper,
        confidence=0.95,
    )
    return CandidateOutcome(candidate=cand, gate=gate)


@pytest.fixture
def promoted() -> tuple[JobResult, list[CandidateOutcome]]:
    rows = [
        row("int8-static", "k1", note="promoted"),
        row(
            "int8-dynamic",
            "k2",
            metric=0.90,
            delta=-0.022,
            gate="fail",
            eligible=False,
            note="failed the gate",
            size_bytes=300_000,
            p50_ms=1.6,
        ),
        row(
            "prune-50",
            "k3",
            status="failed",
            error="pass 'prune': unsupported layer Conv3d",
            metric=None,
            delta=None,
            size_bytes=None,
            p50_ms=None,
            p95_ms=None,
            gate="fail",
            eligible=False,
            note="not built",
        ),
    ]
    result = job(rows, promotion(True, "k1", "int8-static"))
    outs = [outcome(rows[0], True, 0.0042), outcome(rows[1], False, 0.031), outcome(rows[2], False, None)]
    return result, outs


def test_promoted_candidate_and_verdict_sentence_appear(
    promoted: tuple[JobResult, list[CandidateOutcome]],
) -> None:
    result, outs = promoted
    html, md = render_report(result, outs)
    sentence = (
        "Promoted int8-static as version 3 of registered model animal-cnn with alias @champion "
        "(replacing version 2): 2.00× faster on local-cpu, 3.8× smaller, "
        "top1_accuracy -0.20 pt vs the baseline."
    )
    assert sentence in html
    verdict = re.search(r'<p class="verdict promoted" id="verdict">(.*?)</p>', html)
    assert verdict is not None and verdict.group(1) == sentence
    assert re.search(r'<tr class="promoted" data-candidate="k1">.*?int8-static', html)
    assert "int8-static \\*\\*(promoted)\\*\\*" not in md  # label markup is escaped, the badge is not
    assert "int8-static **(promoted)**" in md
    assert "animal-cnn-compress" in html and "Compression report: animal-cnn-compress" in md
    # the baseline: metric, size, p50/p95 on the target profile
    assert "0.9220" in html and "1.00 MB" in html and "2.000 ms / 2.400 ms" in html


def test_gate_verdict_shows_the_drops_upper_bound_when_outcomes_are_given(
    promoted: tuple[JobResult, list[CandidateOutcome]],
) -> None:
    result, outs = promoted
    html, md = render_report(result, outs)
    assert "drop ≤ 0.42 pt (95% upper bound); allowed 1.00 pt" in html
    assert "drop ≤ 3.10 pt (95% upper bound)" in md
    bare_html, _ = render_report(result)
    assert "upper bound" not in bare_html
    assert "-0.20 pt" in bare_html and "2.00×" in bare_html and "3.8× smaller" in bare_html


def test_user_text_is_escaped_in_html_and_markdown() -> None:
    evil = '<script>alert("x")</script>'
    rows = [
        row(evil, "k1"),
        row(
            "b|ad_name*",
            "k2",
            status="failed",
            error="boom <img src=x onerror=alert(1)>\nline two",
            metric=None,
            delta=None,
            size_bytes=None,
            p50_ms=None,
            gate="fail",
            eligible=False,
        ),
    ]
    result = job(rows, promotion(True, "k1", evil))
    html, md = render_report(result)
    assert "<script" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "boom &lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script" not in md and "<img" not in md
    assert "b\\|ad\\_name\\*" in md  # a pipe in a label cannot split the Markdown table


def test_failed_candidate_shows_its_error_and_is_not_plotted(
    promoted: tuple[JobResult, list[CandidateOutcome]],
) -> None:
    result, outs = promoted
    html, md = render_report(result, outs)
    assert "failed: pass &#x27;prune&#x27;: unsupported layer Conv3d" in html
    assert "failed: pass 'prune': unsupported layer Conv3d" in md
    views = candidate_views(result, outs)
    for points in (accuracy_speedup_points(result, views), size_latency_points(result, views)):
        assert [p.label for p in points] == ["int8-static", "int8-dynamic"]
    figs = report_figures(result, views)
    assert [f[0] for f in figs] == ["plot-accuracy-speedup", "plot-size-latency"]
    for _, _, fig, _ in figs:
        texts = [t.get_text() for t in fig.axes[0].texts]
        assert "prune-50" not in texts and "int8-static" in texts and "int8-dynamic" in texts
    assert html.count('src="data:image/png;base64,') == 2
    assert "Not plotted (failed or not measured): prune-50." in html


def test_no_promotion_states_the_reason() -> None:
    rows = [row("int8-dynamic", "k2", metric=0.90, delta=-0.022, gate="fail", eligible=False, note="x")]
    result = job(rows, promotion(False))
    html, md = render_report(result)
    sentence = "Nothing was promoted: no candidate passed the accuracy gate."
    assert f'<p class="verdict none" id="verdict">{sentence}</p>' in html
    assert f"**{sentence}**" in md
    assert 'class="promoted"' not in html


def test_only_mlflow_links_leave_the_page(promoted: tuple[JobResult, list[CandidateOutcome]]) -> None:
    result, outs = promoted
    html, _ = render_report(result, outs)
    assert not re.search(r"https?://", html, re.I)  # sqlite tracking: no links at all
    assert all(v.startswith("data:image/png;base64,") for v in re.findall(r'src="([^"]*)"', html))

    remote = result.model_copy(update={"tracking_uri": "http://mlflow.example:5000/"})
    html, md = render_report(remote, outs)
    experiment = "http://mlflow.example:5000/#/experiments/7"
    allowed = {experiment} | {
        f"{experiment}/runs/{run}" for run in ("parent-run", "run-k1", "run-k2", "run-k3")
    }
    # every URL in the page, in attributes or text, is on the MLflow server; the links are its pages
    refs = re.findall(r"https?://[^\s\"'<>)]+", html.replace("&#x27;", "'").replace("&quot;", '"'), re.I)
    refs = [r.rstrip(".,;") for r in refs]
    assert refs and all(r.startswith("http://mlflow.example:5000/") for r in refs)
    assert set(re.findall(r'href="([^"]*)"', html)) == allowed
    assert (
        "[int8\\-static]" not in md
        and "[int8-static](<http://mlflow.example:5000/#/experiments/7/runs/run-k1>)" in md
    )
    assert not re.search(r"<(link|script)\b", html, re.I)


def test_markdown_table_has_one_row_per_candidate(promoted: tuple[JobResult, list[CandidateOutcome]]) -> None:
    result, outs = promoted
    _, md = render_report(result, outs)
    table = md.split("## Candidates", 1)[1].split("\n\n")[1].splitlines()
    assert table[0].startswith("| Candidate |") and set(table[1]) <= set("|-:")
    body = table[2:]
    assert len(body) == len(result.candidates) == 3
    assert all(r.count(" | ") == table[0].count(" | ") for r in body)
    assert [r.split(" | ")[0] for r in body] == [
        "| int8-static **(promoted)**",
        "| int8-dynamic",
        "| prune-50",
    ]


def test_a_rounded_zero_delta_has_no_sign() -> None:
    result = job([row("int8", "k1", delta=-1e-9)], promotion(False))
    html, md = render_report(result)
    assert "-0.00" not in html and "-0.00" not in md and "0.00 pt" in md


def test_pareto_front() -> None:
    pts = [(1.0, 0.9), (2.0, 0.8), (1.5, 0.7), (0.5, 0.95)]
    assert pareto_front(pts, (True, True)) == [3, 0, 1]
    assert pareto_front(pts, (False, False)) == [3, 0, 2]  # (2.0, 0.8) is beaten by (1.5, 0.7)


def test_publish_stores_both_documents(
    tmp_path: Path, promoted: tuple[JobResult, list[CandidateOutcome]]
) -> None:
    result, outs = promoted
    store = LocalStore(tmp_path / "store")
    published = publish_report(result, outs, store, tmp_path / "work")
    assert published.html_ref.uri.endswith(".html") and published.markdown_ref.uri.endswith(".md")
    html, md = render_report(result, outs)
    assert (published.html, published.markdown) == (html, md), "the caller gets the text it stored"
    assert store.read_bytes(published.html_ref, tmp_path / "cache").decode() == html
    assert store.read_bytes(published.markdown_ref, tmp_path / "cache").decode() == md
    assert publish_report(result, outs, store, tmp_path / "work") == published  # deterministic


def test_publish_turns_store_write_failures_into_infrastructure_errors(
    tmp_path: Path, promoted: tuple[JobResult, list[CandidateOutcome]]
) -> None:
    result, outs = promoted
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(InfrastructureError, match="cannot store the job report"):
        publish_report(result, outs, LocalStore(tmp_path / "store"), blocker)


def _job_result_args(tmp_path: Path, store: object) -> list[object]:
    """`pipeline.job_result`'s arguments for a job with no candidates: the stage records are stand-ins
    with only the fields it reads; the store and the MLflow tracker (SQLite) are real."""
    from squeezeflow.tracking.tracker import Tracker

    ns = SimpleNamespace
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "empty-job")
    parent = tracker.job_run("jk", "empty-job", {})
    return [
        ns(name="empty-job", target=ns(name="local-cpu")),
        ns(tracking_uri=tracker.tracking_uri),
        ns(store=store, workdir=tmp_path / "work", cache=tmp_path / "cache", tracker=tracker),
        ns(job_key="jk", parent_run_id=parent),
        ns(metric_name="top1_accuracy", metric=0.9, measure=ns(size_bytes=1000)),
        ns(p50_ms=1.0, p95_ms=1.1),
        [],
        promotion(False),
        1.0,
    ]


def test_job_result_links_the_published_report(tmp_path: Path) -> None:
    from squeezeflow.runner import job_result

    args = _job_result_args(tmp_path, LocalStore(tmp_path / "store"))
    result = job_result(*args)  # type: ignore[arg-type]
    assert result.report_html and result.report_html.endswith(".html")
    assert result.report_markdown and Path(result.report_markdown).read_text().startswith("# Compression")
    tracker = args[2].tracker  # type: ignore[attr-defined]
    logged = tracker.client.list_artifacts(result.parent_run_id, "report")
    assert [a.path for a in logged] == ["report/report.html"], "the MLflow UI shows it on the job's run"


def test_job_result_survives_a_rendering_bug_but_not_a_store_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from squeezeflow import report
    from squeezeflow.runner import job_result

    def broken(*_: object) -> tuple[str, str]:
        raise ValueError("a rendering bug")

    monkeypatch.setattr(report, "render_report", broken)
    result = job_result(*_job_result_args(tmp_path, LocalStore(tmp_path / "store")))  # type: ignore[arg-type]
    assert result.report_html is None and result.report_markdown is None
    assert "could not render the job report" in caplog.text
    monkeypatch.undo()

    class DownStore(LocalStore):
        def _put_file(self, key: str, src: Path) -> str:
            raise InfrastructureError("S3 upload failed: 503")

    with pytest.raises(InfrastructureError, match="503"):
        job_result(*_job_result_args(tmp_path, DownStore(tmp_path / "down")))  # type: ignore[arg-type]


def _table(markdown: str) -> list[str]:
    """The candidates table's lines in a Markdown document (from its header to its last row)."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Candidate |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def test_every_front_door_shows_the_candidates_table_of_one_renderer(
    tmp_path: Path, promoted: tuple[JobResult, list[CandidateOutcome]]
) -> None:
    """The CLI's stored report, the Kubeflow run's Markdown artifact and the Airflow task's summary XCom
    are one renderer's text for the same result."""
    from squeezeflow.airflow.operators import summary_markdown as airflow_summary
    from squeezeflow.kfp.steps import _write_reports as kfp_reports
    from squeezeflow.report import PublishedReport, render_markdown, summary_markdown

    result, outs = promoted
    doc = result.model_dump(mode="json")  # what the doors pass between tasks
    kfp_md, kfp_html = SimpleNamespace(path=tmp_path / "md"), SimpleNamespace(path=tmp_path / "html")

    # a run whose report could not be rendered: Kubeflow shows the same summary as Airflow's XCom
    kfp_reports(result, None, kfp_html, kfp_md)
    assert kfp_md.path.read_text() == airflow_summary(doc) == summary_markdown(result)
    assert "Promoted int8-static as version 3" in kfp_md.path.read_text()
    assert "<pre>" in kfp_html.path.read_text() and "<script" not in kfp_html.path.read_text()
    # and the summary's table is the report's (the CLI stores that one)
    assert _table(summary_markdown(result)) == _table(render_markdown(result))
    assert len(_table(render_markdown(result))) == 2 + len(result.candidates)

    # a published report: Kubeflow shows its text, never reading it back from the store (these URIs
    # point nowhere)
    html, md = render_report(result, outs)
    nowhere = tmp_path / "gone"
    published = PublishedReport(
        html,
        md,
        ArtifactRef(uri=str(nowhere / "r.html"), sha256="0" * 64, size=1),
        ArtifactRef(uri=str(nowhere / "r.md"), sha256="0" * 64, size=1),
    )
    kfp_reports({**doc, "report_markdown": str(nowhere / "r.md")}, published, kfp_html, kfp_md)
    assert (kfp_md.path.read_text(), kfp_html.path.read_text()) == (md, html)
    assert md == render_markdown(result, outs)


def test_size_against_the_baseline_is_times_smaller_everywhere_as_in_the_verdict(
    promoted: tuple[JobResult, list[CandidateOutcome]],
) -> None:
    from squeezeflow.report import summary_markdown

    result, outs = promoted
    html, md = render_report(result, outs)
    assert "3.8× smaller," in html  # the verdict sentence
    assert "| 260.0 kB | 3.8× smaller |" in md and "| 300.0 kB | 3.3× smaller |" in md
    assert '<td class="num">3.8× smaller</td>' in html
    assert "3.8× smaller" in summary_markdown(result)
    bigger = job([row("fp16-but-bigger", "k9", size_bytes=1_300_000)], promotion(False))
    assert "| 1.30 MB | 1.3× larger |" in render_report(bigger)[1]


def test_the_gate_table_words_each_candidate_as_the_search_policy_does(
    promoted: tuple[JobResult, list[CandidateOutcome]],
) -> None:
    from squeezeflow.report import gate_markdown
    from squeezeflow.search.policy import verdict_of

    _, outs = promoted
    text = gate_markdown(outs)
    assert text.startswith("# Accuracy gate\n\n1 of 3 candidates passed the accuracy gate\n")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "verdict" not in line]
    assert [r.split(" | ")[1] for r in rows] == [verdict_of(o) for o in outs] == ["pass", "fail", "not built"]


def test_the_drop_bound_is_explained_where_equal_accuracies_have_different_bounds() -> None:
    """Two candidates with the same accuracy, one agreeing with the baseline on every sample (bound 0),
    one gaining and losing samples (a larger bound): the report says what the bound is and what it
    rests on, next to the table."""
    from squeezeflow.report.views import BOUND_NOTE

    rows = [row("same-answers", "k1", delta=0.0), row("same-accuracy", "k2", delta=0.0)]
    result = job(rows, promotion(False))
    outs = [outcome(rows[0], True, 0.0), outcome(rows[1], True, 0.0013)]
    outs[1] = outs[1].model_copy(update={"gate": outs[1].gate.model_copy(update={"agreement": 0.97})})
    html, md = render_report(result, outs)
    assert "drop ≤ 0.00 pt" in html and "drop ≤ 0.13 pt" in html
    assert "1500 samples, 99.0% top-1 agreement with the baseline" in html
    assert "1500 samples, 97.0% top-1 agreement with the baseline" in md
    note = re.search(r'<p class="meta" id="bound-note">(.*?)</p>', html)
    assert note is not None and "paired bootstrap" in note.group(1) and "disagree" in note.group(1)
    assert re.search(r'<th title="[^"]*one-sided upper confidence bound[^"]*">Gate</th>', html)
    assert "one\\-sided upper confidence bound" not in md and "one-sided upper confidence bound" in md
    assert BOUND_NOTE.split(":")[0] in md
    bare_html, bare_md = render_report(result)  # no bounds shown: no note about them
    assert 'id="bound-note"' not in bare_html and "paired bootstrap" not in bare_md


def test_the_candidates_table_has_no_column_that_repeats_the_gate_verdict(
    promoted: tuple[JobResult, list[CandidateOutcome]],
) -> None:
    """A build's failure shows in the Gate column ("not built") and the note; no "Status" column says
    "ok" on every other row."""
    result, outs = promoted
    html, md = render_report(result, outs)
    heads = re.findall(r"<th[^>]*>(.*?)</th>", html.split('id="candidates"')[1].split("</thead>")[0])
    assert heads[:4] == ["Candidate", "top1_accuracy", "Δ vs baseline", "Gate"] and "Status" not in heads
    assert _table(md)[0].startswith("| Candidate | top1\\_accuracy | Δ vs baseline | Gate |")
    failed = re.search(r'<tr class="failed" data-candidate="k3">(.*?)</tr>', html)
    assert failed is not None and "failed: pass" in failed.group(1)


def device(model: str, key: str | None, per_batch: list[tuple[int, float]] | None = None) -> DeviceRow:
    """A model measured on the ``edge`` profile at batch 1 (and ``per_batch``: other batch sizes' p50)."""
    others = [
        BatchLatency(
            batch_size=b, p50_ms=p50, p95_ms=p50 * 1.2, throughput_per_s=b * 1000 / p50, cv_p50=0.01, rounds=2
        )
        for b, p50 in per_batch or []
    ]
    first = BatchLatency(batch_size=1, p50_ms=1.0, p95_ms=1.2, throughput_per_s=1000.0, cv_p50=0.01, rounds=2)
    bench = BenchmarkResult(
        key=f"b-{model}",
        model_sha256=model,
        profile="edge",
        p50_ms=1.0,
        p90_ms=1.1,
        p95_ms=1.2,
        p99_ms=1.4,
        mean_ms=1.05,
        throughput_per_s=1000.0,
        iterations=600,
        batch_size=1,
        size_bytes=320_000,
        per_batch=[first, *others] if others else [],
        peak_rss_mb=181.0,
        peak_rss_increase_mb=15.5,
    )
    return DeviceRow(model=model, candidate_key=key, profile="edge", benchmark=bench)


def test_other_batch_sizes_show_when_measured_and_their_column_goes_when_none_was() -> None:
    result = job([row("int8", "k1")], promotion(False))
    plain = result.model_copy(update={"devices": [device("baseline", None), device("int8", "k1")]})
    html, md = render_report(plain)
    assert 'id="devices"' in html and "Other batches" not in html and "Other batches" not in md
    devices_md = md.split("## Devices", 1)[1].split("\n\n")[1].splitlines()
    assert devices_md[0].count(" | ") == devices_md[1].count("|") - 2 == devices_md[2].count(" | ")

    batched = result.model_copy(
        update={"devices": [device("baseline", None, [(8, 4.0)]), device("int8", "k1")]}
    )
    html, md = render_report(batched)
    assert "<th>Other batches</th>" in html and "| Other batches |" in md
    assert "b8: 4.000 ms, 2000/s" in html and "b8: 4.000 ms, 2000/s" in md
    int8 = re.search(r"<tr><td[^>]*>int8</td>(.*?)</tr>", html)
    assert int8 is not None and '<td class="">-</td>' in int8.group(1)  # a row without them: "-"


def test_peak_memory_says_what_it_counts(promoted: tuple[JobResult, list[CandidateOutcome]]) -> None:
    """The increase is the process's peak above its memory before the model was loaded (weights, the
    runtime's session, arenas and buffers), not the model's size: the cell and the note say so."""
    from squeezeflow.report.views import DEVICE_NOTE

    result, outs = promoted
    html, md = render_report(result.model_copy(update={"devices": [device("int8-static", "k1")]}), outs)
    assert "+15.5 MB to load and run, 181 MB process peak" in html
    assert "+15.5 MB to load and run, 181 MB process peak" in md
    assert "MB model" not in html
    for words in ("before the model was loaded", "session", "arenas", "not the model's file size"):
        assert words in DEVICE_NOTE
    assert DEVICE_NOTE.replace("'", "&#x27;") in html


@pytest.fixture
def crowded() -> JobResult:
    """Candidates bunched together, a long label at the right edge, a fast candidate that failed the gate
    and one skipped as slower."""
    rows = [
        row("int8-static-u8s8-per-channel-long", "k1", note="promoted", metric=0.929, p50_ms=0.41),
        row("int8-dynamic", "k2", metric=0.925, p50_ms=0.42, size_bytes=262_000),
        row("prune-30+int8", "k3", metric=0.925, p50_ms=0.43, size_bytes=150_000),
        row("prune-60+int8", "k4", metric=0.881, p50_ms=0.27, size_bytes=120_000, gate="fail"),
        row("dynamic-conv", "k5", metric=None, delta=None, p50_ms=3.0, gate="not evaluated: slower"),
    ]
    return job(rows, promotion(True, "k1", "int8-static-u8s8-per-channel-long"))


def test_plot_labels_stay_inside_the_frame_and_clear_of_each_other(crowded: JobResult) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figs = report_figures(crowded, candidate_views(crowded))
    assert len(figs) == 2
    for _, _, fig, points in figs:
        ax = fig.axes[0]
        canvas = FigureCanvasAgg(fig)  # as the page's PNG is drawn (`png_base64`)
        canvas.draw()
        renderer = canvas.get_renderer()
        frame = ax.get_window_extent(renderer)
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        assert len(boxes) == len(points)
        for t, b in zip(ax.texts, boxes, strict=True):
            assert frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1, t
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert not a.overlaps(b), (a, b)
        legend = fig.legends[0].get_window_extent(renderer)
        assert legend.y1 <= frame.y0, "the legend sits below the axes, never over a label"


def test_the_pareto_front_is_drawn_over_gate_passing_candidates_only(crowded: JobResult) -> None:
    figs = {fid: (cap, fig) for fid, cap, fig, _ in report_figures(crowded, candidate_views(crowded))}
    # prune-60+int8 (0.12 MB, 0.27 ms, 7.4× faster) beats every model on size and speed but failed the gate
    cap, fig = figs["plot-size-latency"]
    assert cap.endswith(
        "Pareto front (dashed), over the baseline and the candidates that passed the accuracy gate only: "
        "prune-30+int8, int8-static-u8s8-per-channel-long."
    )
    (front,) = [line for line in fig.axes[0].lines if str(line.get_label()).startswith("Pareto front")]
    xy = list(zip(np.asarray(front.get_xdata()), np.asarray(front.get_ydata()), strict=True))
    assert xy == [(0.15, 0.43), (0.26, 0.41)]
    cap, fig = figs["plot-accuracy-speedup"]
    assert cap.endswith("accuracy gate only: int8-static-u8s8-per-channel-long.")
    html, _ = render_report(crowded)
    assert "over the baseline and the candidates that passed the accuracy gate only" in html


def test_a_candidate_skipped_as_slower_is_marked_as_such_not_as_a_gate_failure(crowded: JobResult) -> None:
    figs = report_figures(crowded, candidate_views(crowded))
    _, _, fig, points = next(f for f in figs if f[0] == "plot-size-latency")
    skipped = next(p for p in points if p.label == "dynamic-conv")
    assert skipped.skipped and not skipped.passed
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "not evaluated: slower" in legend and "gate failed" in legend
    html, md = render_report(crowded)
    assert '<span class="badge skipped">not evaluated: slower</span>' in html
    assert "| not evaluated: slower |" in md


def test_the_terminal_table_words_verdicts_as_the_report_does(crowded: JobResult) -> None:
    """The gate column holds `verdict_of`'s word ("not evaluated: slower" for a candidate skipped as
    slower), as the HTML and Markdown tables do; the eligibility note has its own column."""
    from rich.console import Console

    from squeezeflow.report import summary_table

    table = summary_table(crowded)
    heads = [str(c.header) for c in table.columns]
    assert heads[-2:] == ["gate", "note"]
    gates = list(table.columns[-2].cells)[1:]  # after the baseline's row
    assert gates == [r.gate for r in crowded.candidates] and "not evaluated: slower" in gates
    console = Console(width=250, record=True)
    console.print(table)
    assert "not evaluated: slower" in console.export_text()


def test_a_paired_speedup_shows_its_confidence_interval_in_every_table() -> None:
    from rich.console import Console

    from squeezeflow.report.terminal import summary_table

    result = job(
        [
            row("int8", "k1", speedup=1.02, speedup_low=0.97, speedup_high=1.08),
            row("fp16", "k2"),  # measured on its own: the two p50s, no interval
        ],
        promotion(False),
    )
    html, md = render_report(result)
    assert "1.02× (0.97–1.08)" in md and "1.02× (0.97–1.08)" in html
    assert "2.00×" in md  # BASE_P50 over the unpaired candidate's p50
    console = Console(record=True, width=300)
    console.print(summary_table(result))
    assert "1.02x (0.97–1.08)" in console.export_text()


def test_an_abandoned_candidate_says_why_in_its_note_and_wears_the_skipped_badge() -> None:
    from squeezeflow.report.views import CandidateView, badge, note_text

    why = "abandoned after recovery epoch 9 of 18: best validation metric 0.2200, 0.6325 below the floor"
    r = row("prune90-ft", "k9", status="abandoned", error=why, gate="abandoned", eligible=False, note=why)
    view = CandidateView(row=r, gate=None, promoted=False, speedup=None, size_ratio=None)
    assert view.failed and note_text(view) == why
    assert badge("abandoned") == "skipped"
