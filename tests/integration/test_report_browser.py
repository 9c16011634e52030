"""The HTML job report as a browser shows it: headless Chromium renders the page from a file (no
network), and the screenshot and the parsed DOM show the verdict, the candidate table and the plots."""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from squeezeflow.report import render_report
from squeezeflow.results import CandidateRow, JobResult, PromotionResult

ARTIFACTS = Path(__file__).resolve().parents[2] / ".squeezeflow" / "test-artifacts"

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EVIL = "<script>document.title='pwned'</script>"


def _row(
    label: str, key: str, metric: float | None, p50: float | None, size: int | None, **kw: object
) -> CandidateRow:
    doc: dict[str, object] = {
        "label": label,
        "candidate_key": key,
        "status": "ok",
        "error": None,
        "metric": metric,
        "delta": None if metric is None else metric - 0.927,
        "size_bytes": size,
        "p50_ms": p50,
        "p95_ms": None if p50 is None else p50 * 1.2,
        "gate": "pass",
        "eligible": True,
        "note": "eligible",
        "run_id": f"run{key}",
        "model_id": None,
    }
    doc.update(kw)
    return CandidateRow.model_validate(doc)


def _result() -> JobResult:
    rows = [
        _row("int8-static-u8s8", "k1", 0.929, 0.41, 260_000, note="promoted"),
        _row("int8-dynamic", "k2", 0.925, 0.78, 270_000),
        _row("prune-30+int8", "k3", 0.921, 0.35, 190_000),
        _row(
            "prune-60+int8", "k4", 0.881, 0.27, 120_000, gate="fail", eligible=False, note="failed the gate"
        ),
        _row(EVIL, "k5", 0.915, 0.52, 500_000, gate="fail", eligible=False, note="failed the gate"),
        _row(
            "lowrank-25",
            "k6",
            None,
            None,
            None,
            status="failed",
            error="pass 'lowrank': unsupported layer <Conv3d>",
            gate="fail",
            eligible=False,
            note="not built",
        ),
    ]
    promotion = PromotionResult(
        key="p",
        promoted=True,
        reason="promoted",
        candidate_key="k1",
        candidate_label="int8-static-u8s8",
        model_name="animal-cnn",
        alias="champion",
        version="4",
        previous_version="3",
    )
    return JobResult(
        job="browser-check",
        job_key="jk",
        metric_name="top1_accuracy",
        baseline_metric=0.927,
        baseline_size_bytes=1_020_000,
        baseline_p50_ms=0.83,
        baseline_p95_ms=0.97,
        target_profile="cpu-2t",
        candidates=rows,
        promotion=promotion,
        tracking_uri="http://127.0.0.1:5000",
        artifacts="/tmp/artifacts",
        parent_run_id="parent",
        experiment_id="1",
        seconds=12.5,
    )


class _Dom(HTMLParser):
    """What the test needs from the browser's serialised DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.imgs: list[dict[str, str | None]] = []
        self.rows = 0
        self._in_tbody = False
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag == "tbody":
            self._in_tbody = True
        if tag == "tr" and self._in_tbody:
            self.rows += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_tbody = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not on PATH (CI installs it; apt-get install chromium)"
)
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    html, _ = render_report(_result())
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    # Kept as a test artifact (CI can upload .squeezeflow/test-artifacts/).
    shot = Path(os.environ.get("SQUEEZEFLOW_REPORT_SHOT", ARTIFACTS / "report-screenshot.png"))
    shot.parent.mkdir(parents=True, exist_ok=True)

    proc = _chromium(
        f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri(), profile=tmp_path / "p1"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    from matplotlib.image import imread

    pixels = np.asarray(imread(shot))[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    assert float(pixels.std()) > 0.05, "the screenshot is (nearly) one flat colour"
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 200, f"only {len(colours)} colours: the plots did not render"

    proc = _chromium("--dump-dom", page.as_uri(), profile=tmp_path / "p2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = _Dom()
    dom.feed(proc.stdout)
    text = " ".join(dom.text)
    assert 'id="candidates"' in proc.stdout and dom.rows == 6
    assert "Promoted int8-static-u8s8 as version 4 of registered model animal-cnn" in text
    assert "script" not in dom.tags  # the label arrived as text, not as an element
    assert EVIL in text and "unsupported layer <Conv3d>" in text
    assert len(dom.imgs) == 2
    assert all((i.get("src") or "").startswith("data:image/png;base64,") for i in dom.imgs)
