"""A job that trains on cuda asks its orchestrator for a GPU where candidates are built (the Airflow pod
mode's optimize pods, the Kubeflow pipeline's trials), on GPU nodes; a CPU job asks for none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.reference import job_doc


def _spec(tmp_path: Path, device: str) -> Path:
    doc = job_doc("m.pt", tmp_path, name=f"gpu-{device}", training={"device": device})
    doc["search"] = {**doc.get("search", {}), "rounds": 0}
    spec = tmp_path / f"{device}.yaml"
    spec.write_text(yaml.safe_dump(doc))
    return spec


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_pod_mode_gives_optimize_pods_a_gpu_only_when_the_spec_trains_on_cuda(
    tmp_path: Path, device: str
) -> None:
    pytest.importorskip("airflow.providers.cncf.kubernetes")
    from airflow.sdk import DAG

    from squeezeflow.airflow.factory import add_compress_tasks
    from squeezeflow.airflow.pods import PodSettings

    pods = PodSettings(gpu_node_selector={"pool": "gpu"}, node_selector={"pool": "general"})
    dag = DAG(f"gpu_{device}")
    add_compress_tasks(dag, str(_spec(tmp_path, device)), pods=pods)

    def pod_of(task: Any) -> dict[str, Any]:
        kwargs = task.partial_kwargs if task.is_mapped else vars(task)
        return {k: kwargs[k] for k in ("container_resources", "node_selector", "tolerations")}

    pods_by_task = {t.task_id: pod_of(t) for t in dag.tasks}
    optimize = pods_by_task.pop("optimize")
    limits = optimize["container_resources"].limits
    if device == "cuda":
        assert limits["nvidia.com/gpu"] == "1"
        assert optimize["node_selector"] == {"pool": "gpu"}
        assert [(t.key, t.operator, t.effect) for t in optimize["tolerations"]] == [
            ("nvidia.com/gpu", "Exists", "NoSchedule")
        ]
    else:
        assert "nvidia.com/gpu" not in limits and optimize["tolerations"] == []
    for task_id, pod in pods_by_task.items():  # nothing else trains: no GPU for them
        assert "nvidia.com/gpu" not in pod["container_resources"].limits, task_id
        assert pod["node_selector"].get("pool") != "gpu", task_id


def _trial_executors(
    pipeline: Path,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(every executor's container, the trial executors' containers, their Kubernetes settings)."""
    spec, platform = list(yaml.safe_load_all(pipeline.read_text()))
    executors = spec["deploymentSpec"]["executors"]
    trials = [name for name in executors if name.startswith("exec-trial")]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return (
        [e["container"] for e in executors.values()],
        [executors[n]["container"] for n in trials],
        [k8s[n] for n in trials],
    )


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_a_stamped_pipeline_gives_its_trials_a_gpu_only_when_the_spec_trains_on_cuda(
    tmp_path: Path, device: str
) -> None:
    pytest.importorskip("kfp")
    from typer.testing import CliRunner

    from squeezeflow.kfp.cli import kfp_app

    out = tmp_path / "pipeline.yaml"
    result = CliRunner().invoke(
        kfp_app,
        ["compile", str(_spec(tmp_path, device)), "-o", str(out), "--gpu-node-selector", "pool=gpu"],
    )
    assert result.exit_code == 0, result.output
    containers, trials, trial_k8s = _trial_executors(out)
    assert trials
    if device == "cuda":
        for container, k8s in zip(trials, trial_k8s, strict=True):
            accelerator = container["resources"]["accelerator"]
            assert accelerator["resourceType"] == "nvidia.com/gpu"
            assert int(accelerator["resourceCount"]) == 1
            assert k8s["nodeSelector"]["labels"] == {"pool": "gpu"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s[
                "tolerations"
            ]
        assert sum("accelerator" in c.get("resources", {}) for c in containers) == len(trials)
    else:
        assert not any("accelerator" in c.get("resources", {}) for c in containers)
        assert not any("nodeSelector" in k or "tolerations" in k for k in trial_k8s)


def test_pod_settings_take_the_gpu_values_the_chart_renders_into_the_runner_config() -> None:
    from squeezeflow.airflow.pods import PodSettings

    config = {  # the runner ConfigMap's keys as charts/squeezeflow/templates/runner.yaml renders them
        "SQUEEZEFLOW_IMAGE": "registry.example/squeezeflow:2",
        "SQUEEZEFLOW_SERVICE_ACCOUNT": "sqf-runner",
        "SQUEEZEFLOW_ENV_SECRET": "sqf-env",
        "SQUEEZEFLOW_NODE_SELECTOR": "{}",
        "SQUEEZEFLOW_GPU_RESOURCE": "nvidia.com/mig-1g.10gb",
        "SQUEEZEFLOW_GPU_COUNT": "2",
        "SQUEEZEFLOW_GPU_NODE_SELECTOR": '{"pool":"gpu"}',
        "SQUEEZEFLOW_GPU_TOLERATIONS": '[{"key":"gpu","operator":"Exists","effect":"NoSchedule"}]',
    }
    pods = PodSettings.from_runner_config(config, namespace="ml")
    assert (pods.image, pods.service_account, pods.secret, pods.namespace) == (
        "registry.example/squeezeflow:2",
        "sqf-runner",
        "sqf-env",
        "ml",
    )
    kwargs = pods.operator_kwargs(gpu=True)
    assert kwargs["container_resources"].limits["nvidia.com/mig-1g.10gb"] == "2"
    assert kwargs["node_selector"] == {"pool": "gpu"}
    assert [t.key for t in kwargs["tolerations"]] == ["gpu"]
    assert "nvidia.com/mig-1g.10gb" not in pods.operator_kwargs().get("container_resources").limits
