"""The Kubeflow pipelines compile, the checked-in YAML is what they compile to, and the stamped
per-model pipeline carries the spec's values as its run form's defaults and its secrets from Kubernetes."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("kfp")
from typer.testing import CliRunner

from squeezeflow.kfp import IMAGE
from squeezeflow.kfp.cli import kfp_app
from squeezeflow.kfp.pipelines import REQUIRED_SECRET_ENV, SECRET_ENV, compile_pipeline

REPO = Path(__file__).resolve().parents[2]
PIPELINES = {
    "compress": REPO / "pipelines" / "compress.py",
    "retrain_and_compress": REPO / "pipelines" / "retrain_and_compress.py",
}
# Tasks that read deployment settings (everything but planning and the verdict).
SETTINGS_FREE: set[str] = (
    set()
)  # every step reads the store (plans and verdicts come from the search records)


def _load(path: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(path.read_text()))


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_checked_in_yaml_is_current(name: str, tmp_path: Path) -> None:
    module = runpy.run_path(str(PIPELINES[name]))
    fresh = compile_pipeline(module[name], tmp_path / f"{name}.yaml")
    checked_in = PIPELINES[name].with_suffix(".yaml")
    assert checked_in.exists(), f"run: python pipelines/{name}.py"

    # The compiler stamps its own version; a newer kfp with the same pipeline is not "stale".
    def body(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if "sdkVersion:" not in line)

    assert body(fresh.read_text()) == body(checked_in.read_text()), (
        f"{checked_in.relative_to(REPO)} is stale: run `python pipelines/{name}.py` and commit the YAML"
    )


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_pipeline_shape_and_secrets(name: str) -> None:
    spec, platform = _load(PIPELINES[name].with_suffix(".yaml"))
    root = spec["root"]
    params = root["inputDefinitions"]["parameters"]
    assert "spec" in params
    assert not {
        p for p in params if any(s in p.lower() for s in ("secret", "password", "access_key", "tracking"))
    }
    tasks = root["dag"]["tasks"]
    assert {"ingest", "baseline", "baseline-benchmark", "plan", "for-loop-1", "gate-verdict"} <= set(tasks)
    assert any(t.startswith("condition-branches-") for t in tasks)
    loop = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]
    assert set(loop) == {"trial"}, "a trial runs the candidate policy in one step"
    conditions = [
        t["triggerPolicy"]["condition"]
        for c in spec["components"].values()
        for t in c.get("dag", {}).get("tasks", {}).values()
        if t.get("triggerPolicy", {}).get("condition")
    ]
    assert len(conditions) == 2 and all("gate-verdict-Output" in c for c in conditions)

    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {IMAGE}
    assert all("pip install" not in " ".join(e["container"]["command"]) for e in executors.values())
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(k8s) == set(executors) - SETTINGS_FREE
    chart = yaml.safe_load((REPO / "charts/squeezeflow/values.yaml").read_text())
    for cfg in k8s.values():
        secrets = cfg["secretAsEnv"]
        assert {s["secretName"] for s in secrets} == {chart["envSecret"]["name"]}, "the chart's secret"
        required = {m["envVar"] for s in secrets if not s.get("optional") for m in s["keyToEnv"]}
        optional = {m["envVar"] for s in secrets if s.get("optional") for m in s["keyToEnv"]}
        assert required == set(REQUIRED_SECRET_ENV), "only what every deployment has is required"
        assert required | optional == set(SECRET_ENV)
        # the chart's MLflow NetworkPolicy admits pods with its client label
        assert cfg["podMetadata"]["labels"] == chart["mlflow"]["networkPolicy"]["clientLabel"]


def test_cli_stamps_a_per_model_pipeline(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "squeezeflow/v1",
        "name": "resnet_prod",
        "model": {"format": "onnx", "uri": "s3://models/resnet/model.onnx"},
        "data": {"uri": "s3://data/resnet-eval/"},
        "tolerance": {"mode": "relative", "max_drop": 0.02},
        "search": {"max_trials": 6},
        "registry": {"model_name": "resnet-prod", "alias": "prod"},
    }
    spec_file = tmp_path / "resnet.yaml"
    spec_file.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out" / "resnet-pipeline.yaml"
    result = CliRunner().invoke(
        kfp_app,
        [
            "compile",
            str(spec_file),
            "-o",
            str(out),
            "--secret",
            "ml-platform",
            "--image",
            "registry.local/sf:1",
        ],
    )
    assert result.exit_code == 0, result.output
    spec, platform = _load(out)
    assert spec["pipelineInfo"]["name"] == "squeezeflow-resnet-prod"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert json.loads(params["spec"]["defaultValue"]) == doc
    assert params["model_uri"]["defaultValue"] == "s3://models/resnet/model.onnx"
    assert params["data_uri"]["defaultValue"] == "s3://data/resnet-eval/"
    assert params["max_drop"]["defaultValue"] == 0.02
    assert params["tolerance_mode"]["defaultValue"] == "relative"
    assert params["max_trials"]["defaultValue"] == 6
    assert params["model_name"]["defaultValue"] == "resnet-prod"
    assert params["alias"]["defaultValue"] == "prod"
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {
        "registry.local/sf:1"
    }
    secrets = {
        s["secretName"]
        for cfg in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
        for s in cfg["secretAsEnv"]
    }
    assert secrets == {"ml-platform"}


def test_cli_stamps_the_retrain_variant_and_refuses_a_bad_spec(tmp_path: Path) -> None:
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "name": "cnn",
                "model": {
                    "format": "state_dict",
                    "uri": "s3://m/cnn.pt",
                    "factory": "squeezeflow.zoo.cnn:tiny_cnn",
                },
                "data": {"uri": "s3://d/"},
                "registry": {"model_name": "cnn"},
            }
        )
    )
    out = tmp_path / "r.yaml"
    ok = CliRunner().invoke(
        kfp_app,
        ["compile", str(spec_file), "-o", str(out), "--retrain", "--train-entrypoint", "pkg.train:main"],
    )
    assert ok.exit_code == 0, ok.output
    spec, _ = _load(out)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["train_entrypoint"]["defaultValue"] == "pkg.train:main"
    assert "retrain" in spec["root"]["dag"]["tasks"]

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "model": {"format": "onnx", "uri": "m.onnx"}}))
    refused = CliRunner().invoke(kfp_app, ["compile", str(bad), "-o", str(tmp_path / "bad-out.yaml")])
    assert refused.exit_code == 2
    assert "registry" in refused.output
    assert not (tmp_path / "bad-out.yaml").exists()
