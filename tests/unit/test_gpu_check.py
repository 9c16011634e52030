"""bench/gpu_check.sh without a GPU: it says so, and the tiny CPU-only check runs the whole path (a job
that trains, its optimize-stage time and ratios, the refusal a cuda job gets here)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="this machine has a GPU: the real check runs"
)


def _gpu_check() -> object:
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shell_script_says_there_is_no_gpu_and_plans_the_tiny_cpu_check() -> None:
    env = {**os.environ, "PYTHON_GPU": sys.executable}  # the interpreter running the tests, no setup
    done = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no CUDA GPU here" in done.stdout
    plan = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("plan: "))[6:])
    assert plan["tiny"] is True and plan["devices"] == ["cpu"] and plan["cuda_profile"] is None


def test_the_tiny_cpu_check_trains_reports_its_ratios_and_shows_the_cuda_refusal(
    tmp_path: Path, small_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from squeezeflow.zoo.cnn import tiny_cnn

    torch.manual_seed(0)
    model = tmp_path / "tiny_cnn.pt"
    torch.save(tiny_cnn().state_dict(), model)  # untrained: the check is about the path, not accuracy
    out = tmp_path / "gpu_check.json"
    rc = _gpu_check().main(  # type: ignore[attr-defined]
        [
            "--model-file",
            str(model),
            "--data",
            str(small_data),
            "--workdir",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0, printed
    report = json.loads(out.read_text())
    run = report["runs"]["cpu"]
    assert set(report["runs"]) == {"cpu"}
    assert run["trained_on"] == "cpu" and run["precision"] == "fp32"
    assert run["optimize_seconds"] > 0 and run["ratios"]["size_ratio"] > 1.0  # pruned: smaller
    assert "cpu: optimize stage" in printed
    assert report["cuda_refusal"].startswith("exit 2: training.device is 'cuda'")
    from mlflow import MlflowClient

    params = MlflowClient(run["tracking_uri"]).get_run(run["run_id"]).data.params
    assert (params["training.device"], params["training.precision"]) == ("cpu", "fp32")
