"""Device budgets in a real job: a candidate that breaks a budget of a profile it was measured on is
not promoted, and the reason says which budget; the baseline's status is shown, not enforced. A
pytorch_eager reference profile measures the baseline's PyTorch module and skips the candidates."""

from __future__ import annotations

from pathlib import Path

import pytest

from squeezeflow.report import render_report
from squeezeflow.runner import run_job
from squeezeflow.spec.load import parse_spec
from squeezeflow.stages import Settings
from tests.reference import FAST_RECIPES, TEST_DEVICE, job_doc

pytestmark = pytest.mark.integration


def test_a_candidate_over_a_p95_budget_is_not_promoted_and_the_reason_names_the_budget(
    tmp_path: Path, wide_model: Path, animal_mnist: Path
) -> None:
    # The wide model's static int8 candidate is faster and smaller than the baseline and passes the
    # gate (see test_pipeline_embedded): here only the budget can stop it.
    budgeted = {**TEST_DEVICE, "warmup": 10, "iterations": 100, "budgets": {"max_p95_ms": 0.001}}
    reference = {"profile": "pytorch-eager-2t", "warmup": 5, "iterations": 50}
    doc = job_doc(
        wide_model,
        animal_mnist,
        name="budgeted",
        devices=[budgeted, reference],
        search={"recipes": FAST_RECIPES[:1], "max_trials": 1, "seed": 0},
    )
    settings = Settings.resolve(
        artifacts=str(tmp_path / "store"),
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        workdir=tmp_path / "work",
    )
    result = run_job(parse_spec(doc), settings, progress=False)

    assert not result.promotion.promoted
    [row] = result.candidates
    assert row.note.startswith("over budget: p95") and "exceeds its budget of 0.001 ms" in row.note
    assert "over budget: p95" in result.promotion.reason
    # Every other condition holds, so the budget is what refused it.
    assert row.gate == "pass"
    assert row.p50_ms is not None and row.p50_ms < result.baseline_p50_ms
    assert row.size_bytes is not None and row.size_bytes < result.baseline_size_bytes

    # The device table: the baseline on both profiles (its budget status shown, not enforced), the
    # candidate on the ONNX Runtime profile only.
    assert [(r.model, r.profile) for r in result.devices] == [
        ("baseline", "cpu-2t"),
        ("baseline", "pytorch-eager-2t"),
        (row.label, "cpu-2t"),
    ]
    eager = result.devices[1].benchmark
    assert eager.runtime == "pytorch_eager" and eager.p50_ms > 0 and eager.macs
    assert result.devices[0].budget_violations and result.devices[2].budget_violations
    for r in result.devices:
        b = r.benchmark
        assert b.peak_rss_increase_mb is not None and b.energy_mj_est is not None and b.macs
    html, md = render_report(result)
    assert 'id="devices"' in html and "not enforced on the baseline" in html
    assert "## Devices" in md
