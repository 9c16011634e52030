"""Fixtures for the deployment checks: the helm and checkov binaries (fetched by `infra/tools/`) and a
renderer for `charts/squeezeflow`.

Tests that need a binary that cannot be had here skip, saying why.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "squeezeflow"
PRODUCTION_VALUES = CHART_DIR / "ci" / "production-values.yaml"
TOOLS_DIR = REPO_ROOT / "infra" / "tools"
TERRAFORM_DIR = REPO_ROOT / "infra" / "terraform"
COMPOSE_FILE = REPO_ROOT / "infra" / "local" / "compose.yaml"
AIRFLOW_OVERLAY = REPO_ROOT / "charts" / "airflow" / "values-squeezeflow.yaml"
RELEASE = "sqf"
NAMESPACE = "squeezeflow"


def load_tool(name: str) -> ModuleType:
    """Import `infra/tools/<name>.py` (a script directory, not a package)."""
    spec = importlib.util.spec_from_file_location(f"squeezeflow_infra_{name}", TOOLS_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def helm() -> Path:
    get_helm = load_tool("get_helm")
    try:
        path: Path = get_helm.ensure_helm()
    except get_helm.HelmUnavailable as exc:
        pytest.skip(f"helm is not available: {exc}")
    return path


@pytest.fixture(scope="session")
def checkov() -> Path:
    get_checkov = load_tool("get_checkov")
    try:
        path: Path = get_checkov.ensure_checkov()
    except get_checkov.CheckovUnavailable as exc:
        pytest.skip(f"checkov is not available: {exc}")
    return path


@dataclass
class Rendering:
    """The manifests `helm template` printed, parsed."""

    docs: list[dict[str, Any]]
    text: str

    def get(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} named *{name_suffix}, found {len(found)}"
        return found[0]

    def kinds(self) -> list[str]:
        return sorted(d["kind"] for d in self.docs)


def run_helm(helm: Path, *args: str, chart: Path = CHART_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, check=False, cwd=chart
    )


def render_chart(
    helm: Path,
    values_files: tuple[Path, ...] = (),
    sets: dict[str, Any] | None = None,
    chart: Path = CHART_DIR,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> Rendering:
    args = ["template", release, str(chart), "--namespace", namespace]
    for f in values_files:
        args += ["--values", str(f)]
    for key, value in (sets or {}).items():
        args += ["--set-string" if isinstance(value, str) else "--set", f"{key}={value}"]
    out = run_helm(helm, *args, chart=chart)
    assert out.returncode == 0, f"helm template failed:\n{out.stderr}"
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    return Rendering(docs=docs, text=out.stdout)


@pytest.fixture(scope="session")
def render(helm: Path) -> Callable[..., Rendering]:
    def _render(
        values_files: tuple[Path, ...] = (),
        sets: dict[str, Any] | None = None,
        chart: Path = CHART_DIR,
        release: str = RELEASE,
        namespace: str = NAMESPACE,
    ) -> Rendering:
        return render_chart(helm, values_files, sets, chart, release, namespace)

    return _render


@pytest.fixture
def chart_with_pipeline(tmp_path: Path) -> Iterator[Path]:
    """A copy of the chart with one (stand-in) compiled pipeline in files/pipelines/."""
    copy = tmp_path / "squeezeflow"
    shutil.copytree(CHART_DIR, copy)
    (copy / "files" / "pipelines" / "squeezeflow_compress.yaml").write_text(
        "# PIPELINE DEFINITION\n# Name: squeezeflow-compress\npipelineInfo:\n  name: squeezeflow-compress\n"
    )
    yield copy


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs inside a rendered object, including the runner's pod templates in its ConfigMap."""
    kind = doc["kind"]
    if kind == "Pod":
        return [doc["spec"]]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [doc["spec"]["template"]["spec"]]
    if kind == "ConfigMap":
        return [
            pod_spec
            for key, value in (doc.get("data") or {}).items()
            if key.endswith("pod-template.yaml")
            for pod_spec in pod_specs(yaml.safe_load(value))
        ]
    return []


def embedded_pods(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Pod manifests carried as ConfigMap data (pod templates for orchestrators)."""
    if doc["kind"] != "ConfigMap":
        return []
    return [yaml.safe_load(v) for k, v in (doc.get("data") or {}).items() if k.endswith("pod-template.yaml")]


def resolve_env(env: list[dict[str, Any]], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """What the kubelet would put in a container's environment for this `env` list, given the secrets.

    Handles `value` and `valueFrom.secretKeyRef` (with `optional`); anything else fails the test, so a
    new kind of reference in the chart cannot be silently dropped here.
    """
    resolved: dict[str, str] = {}
    for item in env:
        name = item["name"]
        if "value" in item:
            resolved[name] = str(item["value"])
            continue
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        assert ref is not None, f"env {name}: unsupported reference {item}"
        secret = secrets.get(ref["name"])
        if secret is None or ref["key"] not in secret:
            assert ref.get("optional", False), f"env {name}: secret {ref['name']}/{ref['key']} is required"
            continue
        resolved[name] = secret[ref["key"]]
    return resolved


@pytest.fixture(scope="session")
def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    return values


RenderFn = Callable[..., Rendering]
