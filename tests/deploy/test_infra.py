"""infra/: Terraform formatting and static checks, the bucket's properties, the local compose file, and
the tool fetchers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import COMPOSE_FILE, TERRAFORM_DIR, RenderFn, load_tool


def test_terraform_fmt_check() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed (no Debian package; .ci/run does not install it)")
    env = {**os.environ, "TF_CLI_CONFIG_FILE": os.devnull, "CHECKPOINT_DISABLE": "1"}
    out = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert out.returncode == 0, f"terraform fmt would change:\n{out.stdout}{out.stderr}"


def test_checkov_terraform_passes(checkov: Path) -> None:
    out = subprocess.run(
        [
            str(checkov),
            f"--directory={TERRAFORM_DIR}",
            "--framework=terraform",
            "--compact",
            "--quiet",
            "--skip-download",
            "--output=json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    report = json.loads(out.stdout)
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range']})"
        for c in report["results"]["failed_checks"]
    ]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    assert report["summary"]["passed"] >= 80, report["summary"]
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.fixture(scope="module")
def terraform_config(checkov: Path) -> dict[str, Any]:
    """The Terraform files parsed by the HCL2 parser in checkov's venv (it is not in the project venv)."""
    python = checkov.parent / "python"
    script = (
        "import hcl2, json, pathlib, sys\n"
        "out = {p.name: hcl2.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob('*.tf'))}\n"
        "print(json.dumps(out))\n"
    )
    out = subprocess.run(
        [str(python), "-c", script, str(TERRAFORM_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    parsed: dict[str, Any] = _normalize(json.loads(out.stdout))
    return parsed


def _normalize(node: Any) -> Any:
    """bc-python-hcl2 wraps attribute values in one-element lists; unwrap scalars, drop line markers."""
    if isinstance(node, dict):
        return {k: _normalize(v) for k, v in node.items() if not k.startswith("__")}
    if isinstance(node, list):
        items = [_normalize(v) for v in node]
        if len(items) == 1 and not isinstance(items[0], (dict, list)):
            return items[0]
        return items
    return node


def _strings(value: Any) -> list[str]:
    """An HCL list attribute as a flat list of strings, however the parser nested it."""
    if isinstance(value, list):
        return [item for v in value for item in _strings(v)]
    return [value]


def _resources(config: dict[str, Any], rtype: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for parsed in config.values():
        for block in parsed.get("resource", []):
            found.update(block.get(rtype, {}))
    return found


def test_bucket_is_versioned_encrypted_and_not_public(terraform_config: dict[str, Any]) -> None:
    versioning = _resources(terraform_config, "aws_s3_bucket_versioning")["artifacts"]
    assert versioning["versioning_configuration"][0]["status"] == "Enabled"
    sse = _resources(terraform_config, "aws_s3_bucket_server_side_encryption_configuration")["artifacts"]
    default = sse["rule"][0]["apply_server_side_encryption_by_default"][0]
    assert default["sse_algorithm"] == "aws:kms"
    pab = _resources(terraform_config, "aws_s3_bucket_public_access_block")["artifacts"]
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert pab[flag] is True, flag
    assert _resources(terraform_config, "aws_kms_key")["artifacts"]["enable_key_rotation"] is True


def test_lifecycle_rule_expires_objects_tagged_as_failed_candidates(terraform_config: dict[str, Any]) -> None:
    lifecycle = _resources(terraform_config, "aws_s3_bucket_lifecycle_configuration")["artifacts"]
    rules = {r["id"]: r for r in lifecycle["rule"]}
    failed = rules["expire-failed-candidates"]
    assert failed["status"] == "Enabled"
    assert failed["filter"][0]["tag"][0] == {
        "key": "${local.failed_tag_key}",
        "value": "${local.failed_tag_value}",
    }
    main_tf = (TERRAFORM_DIR / "main.tf").read_text()
    assert 'failed_tag_key   = "squeezeflow-status"' in main_tf
    assert 'failed_tag_value = "failed"' in main_tf
    assert failed["expiration"][0]["days"] == "${var.failed_candidate_retention_days}"
    assert "abort-incomplete-multipart-uploads" in rules


def test_pipelines_policy_is_scoped_to_the_bucket_prefixes(terraform_config: dict[str, Any]) -> None:
    docs: dict[str, Any] = {}
    for parsed in terraform_config.values():
        for block in parsed.get("data", []):
            docs.update(block.get("aws_iam_policy_document", {}))
    statements = docs["pipelines"]["statement"]
    actions = {a for s in statements for a in _strings(s["actions"])}
    assert not any(a.endswith("*") for a in actions), actions
    assert "s3:DeleteObject" not in actions
    assert "s3:PutObjectTagging" in actions  # the store tags failed candidates
    for s in statements:
        assert all(r != "*" for r in _strings(s["resources"])), s["sid"]


def _variable_default(config: dict[str, Any], name: str) -> Any:
    for parsed in config.values():
        for block in parsed.get("variable", []):
            if name in block:
                return block[name]["default"]
    raise KeyError(name)


def test_default_irsa_trust_names_the_service_accounts_the_chart_creates(
    terraform_config: dict[str, Any], render: RenderFn
) -> None:
    # The documented install: release `squeezeflow` in namespace `squeezeflow`.
    rendering = render(release="squeezeflow", namespace="squeezeflow")
    accounts = {
        f"squeezeflow:{d['metadata']['name']}" for d in rendering.docs if d["kind"] == "ServiceAccount"
    }
    runners = _strings(_variable_default(terraform_config, "runner_service_accounts"))
    assert runners[0] in accounts
    assert _variable_default(terraform_config, "mlflow_service_account") in accounts
    example = (TERRAFORM_DIR / "terraform.tfvars.example").read_text()
    for account in accounts:
        assert f'"{account}"' in example, account
    # Pod mode's default service account is the same runner account.
    from squeezeflow.airflow.pods import PodSettings

    assert f"{PodSettings().namespace}:{PodSettings().service_account}" == runners[0]


def test_outputs_name_the_chart_values_they_feed() -> None:
    outputs = (TERRAFORM_DIR / "outputs.tf").read_text()
    for name in (
        "squeezeflow_artifacts_uri",
        "mlflow_artifacts_uri",
        "pipelines_role_arn",
        "mlflow_role_arn",
    ):
        assert f'output "{name}"' in outputs
    assert "yamlencode(" in outputs  # helm_values


def test_local_compose_file_parses_and_wires_mlflow_like_the_chart() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    services = compose["services"]
    assert set(services) == {"minio", "create-bucket", "postgres", "mlflow"}
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    for volume in [v.split(":")[0] for s in services.values() for v in s.get("volumes", [])]:
        assert volume in compose["volumes"]
    mlflow = services["mlflow"]
    assert mlflow["read_only"] is True and not mlflow["user"].startswith("0")
    env = mlflow["environment"]
    assert "@" not in env["MLFLOW_BACKEND_STORE_URI"]
    assert env["PGPASSWORD"] == services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert env["AWS_SECRET_ACCESS_KEY"] == services["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
    args = mlflow["command"]
    assert args[args.index("--artifacts-destination") + 1].startswith("s3://squeezeflow-artifacts/")
    assert "squeezeflow-artifacts" in services["create-bucket"]["command"][0]


def test_local_compose_file_passes_docker_compose_config() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("`docker compose` is not installed (the compose file is parsed with PyYAML instead)")
    out = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def test_get_helm_is_idempotent(helm: Path) -> None:
    get_helm = load_tool("get_helm")
    before = helm.stat().st_mtime_ns
    assert get_helm.ensure_helm() == helm
    assert helm.stat().st_mtime_ns == before
    assert get_helm.helm_version(helm) == get_helm.HELM_VERSION
