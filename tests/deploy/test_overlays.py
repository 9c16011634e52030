"""The Airflow chart overlay and the KFP upload script the chart's Job runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import AIRFLOW_OVERLAY, CHART_DIR, REPO_ROOT


def test_airflow_overlay_syncs_dags_and_wires_connections() -> None:
    overlay = yaml.safe_load(AIRFLOW_OVERLAY.read_text())
    git_sync = overlay["dags"]["gitSync"]
    assert git_sync["enabled"] is True
    assert git_sync["subPath"] == "dags"
    assert (REPO_ROOT / git_sync["subPath"]).is_dir()
    env_from = yaml.safe_load(overlay["extraEnvFrom"])
    assert env_from == [{"secretRef": {"name": "squeezeflow-airflow-connections"}}]
    # Airflow's pods carry the label the squeezeflow chart's NetworkPolicy admits.
    chart_values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert chart_values["mlflow"]["networkPolicy"]["clientLabel"].items() <= overlay["labels"].items()
    names = {e["name"] for e in overlay["env"]}
    assert "SQUEEZEFLOW_HOME" in names


def test_airflow_variable_the_overlay_documents_is_the_one_the_provider_reads() -> None:
    from squeezeflow.airflow.hooks import ARTIFACTS_VARIABLE

    key = f"AIRFLOW_VAR_{ARTIFACTS_VARIABLE.upper()}"
    assert key in AIRFLOW_OVERLAY.read_text()
    assert f"--from-literal={key}=" in (REPO_ROOT / "charts" / "README.md").read_text()


def _load_upload_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "sqf_upload_pipelines", CHART_DIR / "files" / "upload_pipelines.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeKfp:
    """Just the kfp.Client methods the upload script calls."""

    def __init__(self, existing: dict[str, str], versions: set[str]) -> None:
        self.pipelines = dict(existing)
        self.versions = set(versions)
        self.calls: list[tuple[str, Any]] = []

    def get_pipeline_id(self, name: str) -> str | None:
        return self.pipelines.get(name)

    def upload_pipeline(self, pipeline_package_path: str, pipeline_name: str) -> None:
        self.calls.append(("pipeline", pipeline_name))
        self.pipelines[pipeline_name] = f"id-{pipeline_name}"

    def upload_pipeline_version(
        self, pipeline_package_path: str, pipeline_version_name: str, pipeline_id: str
    ) -> None:
        if pipeline_version_name in self.versions:
            raise RuntimeError("(409) Reason: Conflict: ALREADY_EXISTS")
        self.calls.append(("version", pipeline_version_name))
        self.versions.add(pipeline_version_name)


def test_kfp_upload_script_creates_then_versions_and_is_rerunnable(tmp_path: Path) -> None:
    script = _load_upload_script()
    (tmp_path / "squeezeflow_compress.yaml").write_text("pipelineInfo: {name: squeezeflow-compress}\n")
    (tmp_path / "squeezeflow_sweep.yaml").write_text("pipelineInfo: {name: squeezeflow-sweep}\n")
    client = FakeKfp(existing={"squeezeflow-sweep": "id-1"}, versions=set())
    lines = script.upload_all(client, tmp_path, "0.1.0")
    assert lines == [
        "created pipeline squeezeflow-compress",
        "uploaded squeezeflow-sweep version squeezeflow-sweep-0.1.0",
    ]
    again = script.upload_all(client, tmp_path, "0.1.0")
    assert again[1] == "kept squeezeflow-sweep version squeezeflow-sweep-0.1.0 (already uploaded)"


def test_kfp_upload_script_refuses_an_empty_directory(tmp_path: Path) -> None:
    script = _load_upload_script()
    with pytest.raises(SystemExit, match="no compiled pipelines"):
        script.upload_all(FakeKfp({}, set()), tmp_path, "x")
