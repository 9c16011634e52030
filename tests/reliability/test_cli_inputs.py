"""Inputs to the ``squeezeflow`` command besides the spec, model and data (issue 15's exit-code list):
each wrong one exits 2 with one line that says what to change, before any work, and never a traceback;
an ONNX model whose weights live in a file beside it is read with them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reference import job_doc, write_spec

pytestmark = pytest.mark.integration

SQUEEZEFLOW = str(Path(sys.executable).with_name("squeezeflow"))


def _cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SQUEEZEFLOW_"))}
    return subprocess.run(
        [SQUEEZEFLOW, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd, env=env
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def spec(tmp_path: Path, tiny_model: Path, small_data: Path) -> Path:
    return write_spec(tmp_path / "job.yaml", job_doc(tiny_model, small_data, name="cli-inputs"))


def test_a_database_tracking_uri_without_its_driver_names_what_to_install(tmp_path: Path, spec: Path) -> None:
    proc = _cli(
        "run", spec, "--no-progress", "--tracking-uri", "postgresql://squeeze:S3cret-pw@127.0.0.1:1/mlflow",
        "--artifacts", tmp_path / "artifacts", "--workdir", tmp_path / "work",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (
        "the tracking URI's scheme postgresql:// needs the Python database driver 'psycopg' (module "
        "'psycopg'), which is not installed: pip install 'psycopg[binary]'"
    ) in _one_line(proc.stderr)
    assert "S3cret-pw" not in proc.stderr + proc.stdout
    assert not (tmp_path / "artifacts").exists()


def test_an_unwritable_result_path_is_refused_before_the_job_starts(tmp_path: Path, spec: Path) -> None:
    (tmp_path / "not-a-dir").write_text("a file where a directory should be")
    db = tmp_path / "mlflow.db"
    proc = _cli(
        "run", spec, "--no-progress", "--result", tmp_path / "not-a-dir" / "result.json",
        "--tracking-uri", f"sqlite:///{db}", "--artifacts", tmp_path / "artifacts",
        "--workdir", tmp_path / "work",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"--result {tmp_path}/not-a-dir/result.json: cannot write there (" in _one_line(proc.stderr)
    assert not db.exists(), "the job started before the result path was checked"


def test_a_stage_given_malformed_json_says_which_flag(tmp_path: Path, spec: Path) -> None:
    bad = tmp_path / "ingest.json"
    bad.write_text('{"stage": "ingest", ')
    proc = _cli(
        "stage", "baseline", "--spec", spec, "--ingest", bad,
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts", tmp_path / "artifacts",
        "--workdir", tmp_path / "work",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"--ingest {bad} is not valid JSON: Expecting property name" in _one_line(proc.stderr)


def test_a_stage_given_another_stage_result_says_what_it_expected(tmp_path: Path, spec: Path) -> None:
    wrong = tmp_path / "baseline.json"
    wrong.write_text(json.dumps({"stage": "baseline", "key": "k"}))
    proc = _cli(
        "stage", "baseline", "--spec", spec, "--ingest", wrong,
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts", tmp_path / "artifacts",
        "--workdir", tmp_path / "work",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"--ingest {wrong} is not a IngestResult: " in _one_line(proc.stderr)


def test_an_onnx_model_with_its_weights_in_a_file_beside_it_is_read_with_them(
    tmp_path: Path, tiny_model: Path, small_data: Path
) -> None:
    import onnx

    from squeezeflow.models.sources import export_onnx
    from tests.reference import tiny_module

    folder = tmp_path / "model"
    single = export_onnx(tiny_module(tiny_model), [1, 28, 28], tmp_path / "single.onnx")
    folder.mkdir()
    onnx.save(
        onnx.load(str(single)), str(folder / "tiny.onnx"), save_as_external_data=True, location="weights.bin"
    )
    assert (folder / "weights.bin").stat().st_size > 10_000
    doc = job_doc(tiny_model, small_data, name="external-data")
    doc["model"] = {"format": "onnx", "uri": str(folder / "tiny.onnx")}
    spec = write_spec(tmp_path / "job.yaml", doc)
    common = [
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts", str(tmp_path / "artifacts"),
        "--workdir", str(tmp_path / "work"),
    ]  # fmt: skip
    ingest = _cli("stage", "ingest", "--spec", spec, "--out", tmp_path / "ingest.json", *common, cwd=tmp_path)
    assert ingest.returncode == 0, ingest.stderr
    base = _cli(
        "stage", "baseline", "--spec", spec, "--ingest", tmp_path / "ingest.json",
        "--out", tmp_path / "baseline.json", *common,
        cwd=tmp_path,
    )  # fmt: skip
    assert base.returncode == 0, base.stderr
    result = json.loads((tmp_path / "baseline.json").read_text())
    assert result["metric"] > 0.5
    stored = onnx.load(str(next((tmp_path / "artifacts").rglob(f"*{result['onnx']['sha256']}*"))))
    assert not any(t.external_data for t in stored.graph.initializer), "the stored baseline is self-contained"
