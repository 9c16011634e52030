"""Pod mode: every stage in its own Kubernetes pod, running the project's image.

For platform teams that keep Airflow's own environment lean (no torch, no onnxruntime on the workers):
`add_compress_tasks(..., pods=PodSettings(...))` builds the same DAG shape with ``@task.kubernetes``
tasks (the cncf.kubernetes provider's KubernetesPodOperator under the hood). Each pod reads its settings
from the environment, filled from one Kubernetes secret (``MLFLOW_TRACKING_URI``, ``SQUEEZEFLOW_ARTIFACTS``,
``AWS_*``; the chart's ``squeezeflow-env`` secret), so no credential passes through Airflow. Benchmark pods
can be pinned to benchmark nodes with their own node selector.

The functions below are shipped to the pod as source (the decorator runs them there), so each one
imports what it needs inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from squeezeflow import IMAGE
from squeezeflow.spec.run_form import FIELD_NAMES

#: The toleration GPU node pools carry by default (GKE and the NVIDIA GPU operator taint GPU nodes so).
GPU_TOLERATIONS: tuple[dict[str, str], ...] = (
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
)


@dataclass(frozen=True)
class PodSettings:
    """Where and how the stage pods run."""

    image: str = IMAGE
    namespace: str | None = "squeezeflow"
    """Where the chart put the runner's service account and the ``squeezeflow-env`` secret (Airflow's
    Kubernetes connection needs RBAC to create pods there)."""
    secret: str = "squeezeflow-env"
    service_account: str | None = "squeezeflow-runner"
    node_selector: dict[str, str] = field(default_factory=dict)
    benchmark_node_selector: dict[str, str] = field(default_factory=dict)
    benchmark_tolerations: list[dict[str, str]] = field(default_factory=list)
    """Tolerations of the benchmark pods, for tainted benchmark nodes (``{"key", "operator", "value",
    "effect"}``)."""
    labels: dict[str, str] = field(default_factory=lambda: {"squeezeflow.io/mlflow-client": "true"})
    """Pod labels; the default is the one the chart's MLflow NetworkPolicy admits."""
    cpu: str = "2"
    memory: str = "4Gi"
    gpu_resource: str = "nvidia.com/gpu"
    """The extended resource a GPU is requested as (the device plugin's name: ``nvidia.com/gpu``; a MIG
    slice such as ``nvidia.com/mig-1g.10gb``)."""
    gpu_count: int = 1
    """GPUs each optimize pod asks for when the spec trains on cuda (``training.device: cuda``)."""
    gpu_node_selector: dict[str, str] = field(default_factory=dict)
    """Added to ``node_selector`` for the optimize pods that ask for a GPU (a GPU node pool's label, for
    example ``cloud.google.com/gke-accelerator: nvidia-l4``)."""
    gpu_tolerations: list[dict[str, str]] = field(default_factory=lambda: [dict(t) for t in GPU_TOLERATIONS])
    """Tolerations of the pods that ask for a GPU (GPU nodes are usually tainted ``nvidia.com/gpu``)."""

    @classmethod
    def from_runner_config(cls, data: dict[str, str], **overrides: Any) -> PodSettings:
        """Settings from the chart's runner ConfigMap (its flat ``SQUEEZEFLOW_*`` keys, as the chart's
        values render them: image, service account, secret, node selectors, tolerations, GPUs); a key
        that is missing keeps the default, ``overrides`` win."""
        import json

        def parsed(key: str) -> Any:
            return json.loads(data[key]) if data.get(key) else None

        found: dict[str, Any] = {
            "image": data.get("SQUEEZEFLOW_IMAGE"),
            "service_account": data.get("SQUEEZEFLOW_SERVICE_ACCOUNT"),
            "secret": data.get("SQUEEZEFLOW_ENV_SECRET"),
            "node_selector": parsed("SQUEEZEFLOW_NODE_SELECTOR"),
            "benchmark_node_selector": parsed("SQUEEZEFLOW_BENCHMARK_NODE_SELECTOR"),
            "benchmark_tolerations": parsed("SQUEEZEFLOW_BENCHMARK_TOLERATIONS"),
            "gpu_resource": data.get("SQUEEZEFLOW_GPU_RESOURCE"),
            "gpu_count": int(data["SQUEEZEFLOW_GPU_COUNT"]) if data.get("SQUEEZEFLOW_GPU_COUNT") else None,
            "gpu_node_selector": parsed("SQUEEZEFLOW_GPU_NODE_SELECTOR"),
            "gpu_tolerations": parsed("SQUEEZEFLOW_GPU_TOLERATIONS"),
        }
        return cls(**{**{k: v for k, v in found.items() if v is not None}, **overrides})

    def operator_kwargs(self, benchmark: bool = False, gpu: bool = False) -> dict[str, Any]:
        """The pod operator's arguments for a stage; ``benchmark``: on the benchmark nodes; ``gpu``: with
        ``gpu_count`` GPUs (a limit of ``gpu_resource``), on GPU nodes (``gpu_node_selector``,
        ``gpu_tolerations``)."""
        from kubernetes.client import models as k8s

        limits = {"cpu": self.cpu, "memory": self.memory}
        node_selector = dict(self.benchmark_node_selector if benchmark else self.node_selector)
        tolerations = list(self.benchmark_tolerations) if benchmark else []
        if gpu:
            limits[self.gpu_resource] = str(self.gpu_count)  # an extended resource: its request follows
            node_selector.update(self.gpu_node_selector)
            tolerations += self.gpu_tolerations
        resources = k8s.V1ResourceRequirements(
            requests={"cpu": self.cpu, "memory": self.memory}, limits=limits
        )
        kwargs: dict[str, Any] = {
            "image": self.image,
            "env_from": [k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=self.secret))],
            "node_selector": node_selector,
            "labels": dict(self.labels),
            "tolerations": [k8s.V1Toleration(**t) for t in tolerations],
            "container_resources": resources,
            "do_xcom_push": True,
            "get_logs": True,
            "on_finish_action": "delete_pod",
        }
        if self.namespace:
            kwargs["namespace"] = self.namespace
        if self.service_account:
            kwargs["service_account_name"] = self.service_account
        return kwargs


# What the in-process `resolve_spec` reads from the task's context, rendered by Airflow into the pod's
# arguments when the task runs (the pod has no Airflow context): the run form's values as a JSON object
# (only the form's fields, the DAG's params) and the triggering asset events' ``model_uri`` extras as a
# JSON list. `resolve_spec_in_pod` turns them into overrides with `tasks.run_overrides`, as in process.
RUN_FORM_TEMPLATE = (
    "{" + ", ".join(f'"{name}": {{{{ params.get("{name}") | tojson }}}}' for name in FIELD_NAMES) + "}"
)
EVENT_MODEL_URIS_TEMPLATE = (
    "{%- set found = namespace(uris=[]) -%}"
    "{%- set triggered = triggering_asset_events if triggering_asset_events is defined else {} -%}"
    "{%- for events in triggered.values() -%}{%- for event in events -%}"
    "{%- set found.uris = found.uris + [(event.extra or {}).get('model_uri')] -%}"
    "{%- endfor -%}{%- endfor -%}"
    "{{ found.uris | tojson }}"
)


def resolve_spec_in_pod(
    spec_source: str,
    overrides: dict[str, Any] | None = None,
    form: str | dict[str, Any] | None = None,
    event_model_uris: str | list[str | None] | None = None,
) -> dict[str, Any]:
    """``form`` and ``event_model_uris``: `RUN_FORM_TEMPLATE` and `EVENT_MODEL_URIS_TEMPLATE` as
    rendered (JSON text; already parsed where the DAG renders templates as native objects)."""
    import json

    from squeezeflow import tasks

    values = json.loads(form) if isinstance(form, str) else form
    uris = json.loads(event_model_uris) if isinstance(event_model_uris, str) else event_model_uris
    return tasks.resolve_spec(spec_source, tasks.run_overrides(values, uris or (), overrides) or None)


# The pod entry points: each parses its JSON arguments into the typed records `squeezeflow.tasks` takes,
# and returns the task's result as the JSON the pod's XCom holds (its records' ``model_dump(mode="json")``).


def ingest_in_pod(spec: dict[str, Any]) -> dict[str, Any]:
    from squeezeflow import tasks
    from squeezeflow.stages import Settings

    return tasks.ingest_task(tasks.job_of(spec), Settings.resolve()).model_dump(mode="json")


def baseline_in_pod(spec: dict[str, Any], ingest: dict[str, Any]) -> dict[str, Any]:
    from squeezeflow import tasks
    from squeezeflow.results import IngestResult
    from squeezeflow.stages import Settings

    ing = IngestResult.model_validate(ingest)
    return tasks.baseline_task(tasks.job_of(spec), Settings.resolve(), ing).model_dump(mode="json")


def baseline_benchmark_in_pod(
    spec: dict[str, Any], ingest: dict[str, Any], baseline: dict[str, Any]
) -> dict[str, Any]:
    from squeezeflow import tasks
    from squeezeflow.results import BaselineResult, IngestResult, Pending, dump_baseline_benchmarks
    from squeezeflow.stages import Settings

    ing, base = IngestResult.model_validate(ingest), BaselineResult.model_validate(baseline)
    benches = tasks.baseline_benchmark_task(tasks.job_of(spec), Settings.resolve(), ing, base)
    assert not isinstance(benches, Pending)  # a pod waits for device agents (no defer_remote)
    return dump_baseline_benchmarks(benches)


def plan_in_pod(spec: dict[str, Any], ingest: dict[str, Any], round_index: int = 0) -> list[dict[str, Any]]:
    from squeezeflow import tasks
    from squeezeflow.results import IngestResult
    from squeezeflow.stages import Settings

    ing = IngestResult.model_validate(ingest)
    recipes = tasks.plan_task(tasks.job_of(spec), Settings.resolve(), ing, round_index)
    return [r.model_dump(mode="json") for r in recipes]


def optimize_in_pod(
    spec: dict[str, Any], ingest: dict[str, Any], baseline: dict[str, Any], recipe: dict[str, Any]
) -> dict[str, Any]:
    from squeezeflow import tasks
    from squeezeflow.results import BaselineResult, IngestResult
    from squeezeflow.stages import Settings

    ing, base = IngestResult.model_validate(ingest), BaselineResult.model_validate(baseline)
    trial = tasks.optimize_task(tasks.job_of(spec), Settings.resolve(), ing, base, tasks.parse_recipe(recipe))
    return trial.model_dump(mode="json")


def gate_in_pod(
    spec: dict[str, Any], ingest: dict[str, Any], baseline: dict[str, Any], outcome: dict[str, Any]
) -> dict[str, Any]:
    from squeezeflow import tasks
    from squeezeflow.results import BaselineResult, IngestResult, Trial
    from squeezeflow.stages import Settings

    ing, base = IngestResult.model_validate(ingest), BaselineResult.model_validate(baseline)
    gated = tasks.gate_task(tasks.job_of(spec), Settings.resolve(), ing, base, Trial.model_validate(outcome))
    assert isinstance(gated, Trial)  # a pod waits for device agents (no defer_remote)
    return gated.model_dump(mode="json")


def benchmark_in_pod(
    spec: dict[str, Any], ingest: dict[str, Any], baseline: dict[str, Any], outcome: dict[str, Any]
) -> dict[str, Any]:
    from squeezeflow import tasks
    from squeezeflow.results import BaselineResult, CandidateOutcome, IngestResult, Trial
    from squeezeflow.stages import Settings

    ing, base = IngestResult.model_validate(ingest), BaselineResult.model_validate(baseline)
    done = tasks.benchmark_task(
        tasks.job_of(spec), Settings.resolve(), ing, base, Trial.model_validate(outcome)
    )
    assert isinstance(done, CandidateOutcome)  # a pod waits for device agents (no defer_remote)
    return done.model_dump(mode="json")


def promote_in_pod(
    spec: dict[str, Any],
    ingest: dict[str, Any],
    baseline: dict[str, Any],
    baseline_benchmarks: dict[str, Any],
) -> dict[str, Any]:
    from squeezeflow import tasks
    from squeezeflow.results import BaselineResult, IngestResult, parse_baseline_benchmarks
    from squeezeflow.stages import Settings

    result = tasks.promote_task(
        tasks.job_of(spec),
        Settings.resolve(),
        IngestResult.model_validate(ingest),
        BaselineResult.model_validate(baseline),
        parse_baseline_benchmarks(baseline_benchmarks),
    )
    return result.model_dump(mode="json")


def add_pod_tasks(
    dag: Any,
    spec_source: str,
    pods: PodSettings,
    overrides: Any = None,
    upstream: Any = None,
    rounds: int = 1,
    parallel_trials: int | None = None,
    gpu: bool = False,
) -> Any:
    """The compression tasks of `factory.add_compress_tasks`, each stage in its own pod, the search
    unrolled to ``rounds`` rounds, each mapped stage running at most ``parallel_trials`` pods at once in
    a DAG run. ``gpu``: the optimize pods (the ones that train) ask for a GPU (`PodSettings.gpu_count`)."""
    from airflow.sdk import task

    from squeezeflow.airflow.layout import CANDIDATE_LABEL, round_task_id

    def pod(
        fn: Any, task_id: str, benchmark: bool = False, mapped: bool = False, gpu: bool = False, **extra: Any
    ) -> Any:
        kwargs: dict[str, Any] = {"task_id": task_id, **pods.operator_kwargs(benchmark, gpu), **extra}
        if mapped:
            kwargs["map_index_template"] = CANDIDATE_LABEL
            kwargs["max_active_tis_per_dagrun"] = parallel_trials
        return task.kubernetes(**kwargs)(fn)

    with dag:
        spec = pod(resolve_spec_in_pod, "resolve_spec")(
            spec_source, overrides, RUN_FORM_TEMPLATE, EVENT_MODEL_URIS_TEMPLATE
        )
        if upstream is not None:
            upstream >> spec
        ing = pod(ingest_in_pod, "ingest")(spec)
        base = pod(baseline_in_pod, "baseline")(spec, ing)
        base_bench = pod(baseline_benchmark_in_pod, "baseline_benchmark", benchmark=True)(spec, ing, base)
        measured: Any = None
        for index in range(rounds):
            # Only ordered after the previous round (no data: a round that planned nothing has no output).
            plan = pod(plan_in_pod, round_task_id("plan", index), trigger_rule="none_failed")(
                spec, ing, index
            )
            (base_bench if measured is None else measured) >> plan
            built = pod(optimize_in_pod, round_task_id("optimize", index), mapped=True, gpu=gpu).partial(
                spec=spec, ingest=ing, baseline=base
            )
            built = built.expand(recipe=plan)
            gated = (
                pod(gate_in_pod, round_task_id("gate", index), mapped=True)
                .partial(spec=spec, ingest=ing, baseline=base)
                .expand(outcome=built)
            )
            measured = (
                pod(benchmark_in_pod, round_task_id("benchmark", index), benchmark=True, mapped=True)
                .partial(spec=spec, ingest=ing, baseline=base)
                .expand(outcome=gated)
            )
        promote = pod(promote_in_pod, "promote", trigger_rule="none_failed")(spec, ing, base, base_bench)
        measured >> promote
        return promote
