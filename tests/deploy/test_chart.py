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
    assert (
        pod["spec"]["serviceAccountName"] == config["SQUEEZEFLOW_SERVICE_ACCOUNT"] == "sqf-squeezeflow-runner"
    )
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
    ({"mlflow.auth.defaultPermission": "ALL"}, "defaultPermission"),
    ({"runner.automountServiceAccountToken": "yes"}, "automountServiceAccountToken"),
]


@pytest.mark.parametrize(("sets", "mentioned"), BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_values_schema_rejects_bad_values(helm: Path, sets: dict[str, Any], mentioned: str) -> None:
    args = ["template", "sqf", str(CHART_DIR)]
    for key, value in sets.items():
        args += ["--set-string" if isinstance(value, str) else "--set", f"{key}={value}"]
    out = run_helm(helm, *args)
    assert out.returncode != 0, f"{sets} was accepted"
    assert mentioned in out.stderr, out.stderr


def _objects(rendering: Rendering) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in rendering.docs}


@pytest.mark.parametrize("second_release", ["other", "squeezeflow"])
def test_two_releases_in_one_namespace_share_no_object_and_each_uses_its_own_service_account(
    render: RenderFn, chart_with_pipeline: Path, second_release: str
) -> None:
    # Everything the chart can render: production values (basic-auth on) and the KFP upload Job.
    sets = {"kfpUpload.enabled": True}
    first = render((PRODUCTION_VALUES,), sets, chart=chart_with_pipeline)
    second = render((PRODUCTION_VALUES,), sets, chart=chart_with_pipeline, release=second_release)
    shared = _objects(first) & _objects(second)
    assert not shared, f"both releases render {sorted(shared)}"
    for rendering in (first, second):
        accounts = {d["metadata"]["name"] for d in rendering.docs if d["kind"] == "ServiceAccount"}
        used = {spec["serviceAccountName"] for doc in rendering.docs for spec in pod_specs(doc)}
        assert used <= accounts, f"pods name service accounts of another release: {used - accounts}"
        assert rendering.get("ConfigMap", "-runner")["data"]["SQUEEZEFLOW_SERVICE_ACCOUNT"] in accounts


@pytest.mark.parametrize("values", ["default", "production"])
def test_no_pod_and_no_service_account_of_the_chart_mounts_a_kubernetes_api_token(
    render: RenderFn, chart_with_pipeline: Path, values: str
) -> None:
    files = (PRODUCTION_VALUES,) if values == "production" else ()
    rendering = render(files, {"kfpUpload.enabled": True}, chart=chart_with_pipeline)
    specs = [spec for doc in rendering.docs for spec in pod_specs(doc)]
    assert len(specs) == 4  # MLflow, the KFP upload Job, the runner's two pod templates
    for spec in specs:
        assert spec["automountServiceAccountToken"] is False, spec["containers"][0]["name"]
    # Pods that name the runner's account without the chart's templates (pod mode) get none either.
    for account in (d for d in rendering.docs if d["kind"] == "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False, account["metadata"]["name"]


def test_runner_service_account_token_is_mounted_only_when_the_values_ask_for_it(render: RenderFn) -> None:
    rendering = render(sets={"runner.automountServiceAccountToken": True})
    assert rendering.get("ServiceAccount", "-runner")["automountServiceAccountToken"] is True
    for pod in embedded_pods(rendering.get("ConfigMap", "-runner")):
        assert pod["spec"]["automountServiceAccountToken"] is True
    mlflow = rendering.get("Deployment", "-mlflow")["spec"]["template"]["spec"]
    assert mlflow["automountServiceAccountToken"] is False


def _mlflow_container(rendering: Rendering) -> dict[str, Any]:
    container: dict[str, Any] = rendering.get("Deployment", "-mlflow")["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


def test_production_values_run_mlflow_with_basic_auth_and_its_credentials_from_a_secret(
    production_rendering: Rendering,
) -> None:
    deployment = production_rendering.get("Deployment", "-mlflow")
    container = _mlflow_container(production_rendering)
    args = container["args"]
    assert args[:3] == ["server", "--app-name", "basic-auth"]
    env = {e["name"]: e for e in container["env"]}
    for name in (
        "MLFLOW_AUTH_ADMIN_USERNAME",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
    ):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "squeezeflow-mlflow-auth" and "optional" not in ref, name
    # No credential inline anywhere in the Deployment, and the chart renders no Secret of its own.
    for item in container["env"]:
        if any(word in item["name"] for word in ("PASSWORD", "SECRET", "TOKEN", "USERNAME", "PGUSER")):
            assert "value" not in item, item["name"]
    assert "Secret" not in production_rendering.kinds()
    # The configuration file comes from the chart's ConfigMap and holds no credential.
    config_path = Path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    (volume,) = [name for name, path in mounts.items() if path == str(config_path.parent)]
    config_map = production_rendering.get("ConfigMap", volumes[volume]["configMap"]["name"])
    ini = config_map["data"][config_path.name]
    assert "admin_password" not in ini and "admin_username" not in ini
    assert "default_permission = READ" in ini
    uri = next(line.split("=", 1)[1].strip() for line in ini.splitlines() if line.startswith("database_uri"))
    assert uri.startswith("postgresql+psycopg2://") and "@" not in uri
    assert uri.endswith("/mlflow?sslmode=require")
    # A changed configuration rolls the pods.
    assert deployment["spec"]["template"]["metadata"]["annotations"]["checksum/auth-config"]


def test_production_values_require_tls_to_postgresql_in_the_backend_store_uri(
    production_rendering: Rendering,
) -> None:
    env = {e["name"]: e.get("value") for e in _mlflow_container(production_rendering)["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("/mlflow?sslmode=require")
    assert env["PGSSLMODE"] == "require"


def test_default_values_keep_mlflow_open_inside_its_network_policy_and_prefer_tls(
    default_rendering: Rendering,
) -> None:
    container = _mlflow_container(default_rendering)
    assert "--app-name" not in container["args"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert not any(name.startswith("MLFLOW_AUTH") for name in env)
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("?sslmode=prefer")


def test_verify_full_without_a_ca_bundle_fails_with_a_clear_message(helm: Path) -> None:
    out = run_helm(
        helm, "template", "sqf", str(CHART_DIR), "--set", "mlflow.backendStore.sslmode=verify-full"
    )
    assert out.returncode != 0
    assert "mlflow.backendStore.sslRootCert.configMap" in out.stderr, out.stderr


def test_verify_full_reads_the_ca_bundle_from_a_config_map(render: RenderFn) -> None:
    rendering = render(
        (PRODUCTION_VALUES,),
        {
            "mlflow.backendStore.sslmode": "verify-full",
            "mlflow.backendStore.sslRootCert.configMap": "rds-ca",
            "mlflow.backendStore.sslRootCert.key": "eu-west-1-bundle.pem",
        },
    )
    container = _mlflow_container(rendering)
    env = {e["name"]: e.get("value") for e in container["env"]}
    ca = Path(env["PGSSLROOTCERT"])
    assert ca.name == "eu-west-1-bundle.pem"
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(ca.parent)]
    volumes = rendering.get("Deployment", "-mlflow")["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "rds-ca"
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("?sslmode=verify-full")


def test_runner_config_carries_the_gpu_values_pod_mode_reads(render: RenderFn) -> None:
    from squeezeflow.airflow.pods import PodSettings

    rendering = render(
        sets={"runner.gpu.resourceName": "nvidia.com/mig-1g.10gb", "runner.gpu.nodeSelector.pool": "gpu"}
    )
    config = rendering.get("ConfigMap", "-runner")["data"]
    pods = PodSettings.from_runner_config(config)
    resources = pods.operator_kwargs(gpu=True)["container_resources"]
    assert resources.limits["nvidia.com/mig-1g.10gb"] == "1"
    assert pods.gpu_node_selector == {"pool": "gpu"}
    assert pods.gpu_tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pods.image == config["SQUEEZEFLOW_IMAGE"]
