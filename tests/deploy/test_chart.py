"""charts/squeezeflow: lint, render for default and production-like values, validate every manifest
against the Kubernetes schemas, and check the security properties the issue asks for."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    CHART_DIR,
    PRODUCTION_VALUES,
    RenderFn,
    Rendering,
    embedded_pods,
    pod_specs,
    run_helm,
)
from tests.servers import venv_tool

# The chart's kubeVersion floor and the newest schemas kubernetes-validate carries.
KUBERNETES_VERSIONS = ("1.27.0", "1.35.0")


@pytest.fixture(scope="module")
def default_rendering(render: RenderFn) -> Rendering:
    return render()


@pytest.fixture(scope="module")
def production_rendering(render: RenderFn) -> Rendering:
    return render((PRODUCTION_VALUES,))


@pytest.mark.parametrize("values", ["default", "production"])
def test_helm_lint_strict(helm: Path, values: str) -> None:
    args = ["lint", "--strict", str(CHART_DIR)]
    if values == "production":
        args += ["--values", str(PRODUCTION_VALUES)]
    out = run_helm(helm, *args)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


def test_helm_template_default_values_renders_mlflow_and_runner(default_rendering: Rendering) -> None:
    assert default_rendering.kinds() == sorted(
        ["ConfigMap", "Deployment", "NetworkPolicy", "Service", "ServiceAccount", "ServiceAccount"]
    )


def test_helm_template_production_values_carries_irsa_and_benchmark_nodes(
    production_rendering: Rendering,
) -> None:
    runner_sa = production_rendering.get("ServiceAccount", "squeezeflow-runner")
    assert runner_sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(
        ":role/squeezeflow-pipelines"
    )
    bench = yaml.safe_load(
        production_rendering.get("ConfigMap", "-runner")["data"]["benchmark-pod-template.yaml"]
    )
    assert bench["spec"]["nodeSelector"]["squeezeflow.io/benchmark"] == "true"
    assert bench["spec"]["tolerations"][0]["key"] == "squeezeflow.io/benchmark"
    assert bench["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "4"
    assert production_rendering.get("Deployment", "-mlflow")["spec"]["replicas"] == 2


def test_helm_template_kfp_upload_job_carries_the_compiled_pipelines(
    render: RenderFn, chart_with_pipeline: Path
) -> None:
    rendering = render((PRODUCTION_VALUES,), {"kfpUpload.enabled": True}, chart=chart_with_pipeline)
    job = rendering.get("Job", "-kfp-upload")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    data = rendering.get("ConfigMap", "-kfp-upload")["data"]
    assert "squeezeflow_compress.yaml" in data
    ast.parse(data["upload_pipelines.py"])  # the script survived templating intact
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["kfp-token"]["projected"]["sources"][0]["serviceAccountToken"]["audience"]


def test_kfp_upload_without_compiled_pipelines_fails_with_a_clear_message(helm: Path) -> None:
    out = run_helm(helm, "template", "sqf", str(CHART_DIR), "--set", "kfpUpload.enabled=true")
    assert out.returncode != 0
    assert "files/pipelines/ holds no compiled pipeline" in out.stderr


@pytest.mark.parametrize("values", ["default", "production", "kfp-upload"])
def test_every_rendered_manifest_passes_kubernetes_validate_strict(
    render: RenderFn, chart_with_pipeline: Path, tmp_path: Path, values: str
) -> None:
    if values == "default":
        rendering = render()
    elif values == "production":
        rendering = render((PRODUCTION_VALUES,))
    else:
        rendering = render((PRODUCTION_VALUES,), {"kfpUpload.enabled": True}, chart=chart_with_pipeline)
    manifests = tmp_path / "rendered.yaml"
    manifests.write_text(rendering.text)
    # The runner's pod templates are Pod manifests too: validate them as such.
    pods = [pod for doc in rendering.docs for pod in embedded_pods(doc)]
    assert len(pods) == 2
    templates = tmp_path / "pod-templates.yaml"
    templates.write_text(yaml.safe_dump_all(pods))
    for version in KUBERNETES_VERSIONS:
        out = subprocess.run(
            [
                venv_tool("kubernetes-validate"),
                "--strict",
                f"--kubernetes-version={version}",
                "--quiet",
                str(manifests),
                str(templates),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, f"kubernetes {version}:\n{out.stdout}{out.stderr}"


@pytest.mark.parametrize("values", ["default", "production"])
def test_every_container_runs_as_non_root_with_a_read_only_root_filesystem(
    default_rendering: Rendering, production_rendering: Rendering, values: str
) -> None:
    rendering = default_rendering if values == "default" else production_rendering
    specs = [spec for doc in rendering.docs for spec in pod_specs(doc)]
    assert len(specs) == 3  # MLflow, runner pod template, benchmark pod template
    for spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] > 0
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, container["name"]
            assert sc["allowPrivilegeEscalation"] is False, container["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], container["name"]
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{container['name']}: no writable /tmp"


def test_network_policy_admits_only_labelled_clients_to_mlflow(production_rendering: Rendering) -> None:
    policy = production_rendering.get("NetworkPolicy", "-mlflow")
    deployment = production_rendering.get("Deployment", "-mlflow")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    peers = policy["spec"]["ingress"][0]["from"]
    label = {"squeezeflow.io/mlflow-client": "true"}
    assert peers[0] == {"podSelector": {"matchLabels": label}}
    namespaces = [p["namespaceSelector"]["matchLabels"] for p in peers if "podSelector" in p and len(p) == 2]
    assert {"kubernetes.io/metadata.name": "airflow"} in namespaces
    # The runner's pods carry the label that lets them in.
    runner = yaml.safe_load(production_rendering.get("ConfigMap", "-runner")["data"]["pod-template.yaml"])
    assert label.items() <= runner["metadata"]["labels"].items()


def test_mlflow_keeps_credentials_out_of_its_command_line(production_rendering: Rendering) -> None:
    container = production_rendering.get("Deployment", "-mlflow")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert "@" not in env["MLFLOW_BACKEND_STORE_URI"]["value"]
    for name in ("PGPASSWORD", "AWS_SECRET_ACCESS_KEY"):
        assert "secretKeyRef" in env[name]["valueFrom"], name
    assert not any("password" in str(arg).lower() for arg in container["args"])


def test_runner_pod_template_reads_the_shared_env_secret(default_rendering: Rendering) -> None:
    config = default_rendering.get("ConfigMap", "-runner")["data"]
    pod = yaml.safe_load(config["pod-template.yaml"])
    container = pod["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "squeezeflow-env"}}]
    assert pod["spec"]["serviceAccountName"] == config["SQUEEZEFLOW_SERVICE_ACCOUNT"] == "squeezeflow-runner"
    assert json.loads(config["SQUEEZEFLOW_BENCHMARK_NODE_SELECTOR"]) == {}


def test_env_secret_rendered_for_trials_defaults_the_tracking_uri(render: RenderFn) -> None:
    rendering = render(sets={"envSecret.create": True, "envSecret.data.SQUEEZEFLOW_ARTIFACTS": "s3://b/sqf"})
    secret = rendering.get("Secret", "squeezeflow-env")["stringData"]
    assert secret == {
        "MLFLOW_TRACKING_URI": "http://sqf-squeezeflow-mlflow.squeezeflow.svc:5000",
        "SQUEEZEFLOW_ARTIFACTS": "s3://b/sqf",
    }


BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"podSecurity.runAsUser": 0}, "runAsUser"),
    ({"mlflow.artifacts.destination": "/var/mlflow"}, "destination"),
    ({"mlflow.backendStore.sslmode": "sometimes"}, "sslmode"),
    ({"mlflow.typo": "x"}, "typo"),
    ({"envSecret.data.AWS_SECRET_KEY": "x"}, "AWS_SECRET_KEY"),
    ({"image.pullPolicy": "Sometimes"}, "pullPolicy"),
]


@pytest.mark.parametrize(("sets", "mentioned"), BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_values_schema_rejects_bad_values(helm: Path, sets: dict[str, Any], mentioned: str) -> None:
    args = ["template", "sqf", str(CHART_DIR)]
    for key, value in sets.items():
        args += ["--set-string" if isinstance(value, str) else "--set", f"{key}={value}"]
    out = run_helm(helm, *args)
    assert out.returncode != 0, f"{sets} was accepted"
    assert mentioned in out.stderr, out.stderr
