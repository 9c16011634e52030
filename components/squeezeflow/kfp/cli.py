"""``squeezeflow kfp``: compile the Kubeflow pipelines, generic or stamped from a job spec."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from squeezeflow.kfp.pipelines import (
    DEFAULT_GPU_RESOURCE,
    DEFAULT_PARALLELISM,
    DEFAULT_SECRET,
    SECRET_ENV,
    PipelineOptions,
)

kfp_app = typer.Typer(
    no_args_is_help=True,
    help="Kubeflow Pipelines: compile a per-model pipeline from a job spec, to upload in the Kubeflow UI.",
)

_ALL_KEYS = ",".join(SECRET_ENV)


@kfp_app.callback()
def _group() -> None:
    """Kubeflow Pipelines: compile a per-model pipeline from a job spec, to upload in the Kubeflow UI."""


def _options(
    secret: str,
    secret_keys: str,
    parallelism: int,
    benchmark_cpu: str,
    trial_gpu: int = 0,
    gpu_resource: str = DEFAULT_GPU_RESOURCE,
    gpu_node_selector: list[str] | None = None,
) -> PipelineOptions:
    keys = tuple(k.strip() for k in secret_keys.split(",") if k.strip())
    selector: dict[str, str] = {}
    for pair in gpu_node_selector or []:
        label, sep, value = pair.partition("=")
        if not sep or not label.strip():
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--gpu-node-selector")
        selector[label.strip()] = value.strip()
    return PipelineOptions(
        secret_name=secret or None,
        secret_env=keys,
        parallelism=parallelism,
        benchmark_cpu=benchmark_cpu or None,
        trial_gpu=trial_gpu,
        gpu_resource=gpu_resource,
        gpu_node_selector=selector,
    )


SecretOpt = Annotated[
    str,
    typer.Option(
        "--secret",
        help="Kubernetes secret the tasks read their environment from (MLflow URI, artifact store, S3 "
        "credentials and endpoint). Empty: none (the pods' environment must carry them).",
    ),
]
SecretKeysOpt = Annotated[
    str,
    typer.Option(
        "--secret-keys", help="Comma-separated keys of the secret, each mapped to the variable of that name."
    ),
]
ParallelismOpt = Annotated[
    int, typer.Option("--parallelism", min=1, help="Candidates built at the same time.")
]
BenchCpuOpt = Annotated[
    str, typer.Option("--benchmark-cpu", help="CPU request and limit of benchmark tasks (empty: none).")
]
TrialGpuOpt = Annotated[
    int,
    typer.Option(
        "--trial-gpu",
        min=0,
        help="GPUs each trial asks for (0: one when the spec says training.device: cuda, else none).",
    ),
]
GpuResourceOpt = Annotated[
    str, typer.Option("--gpu-resource", help="The extended resource a GPU is requested as.")
]
GpuNodeSelectorOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--gpu-node-selector",
        help="KEY=VALUE node label a trial with a GPU must land on (repeatable; a GPU node pool's).",
    ),
]
ImageOpt = Annotated[
    str | None, typer.Option("--image", help="Image the components run in (default: the project's image).")
]


@kfp_app.command("compile")
def compile_cmd(
    spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The job spec (YAML) to stamp.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Where to write the pipeline YAML.")],
    retrain: Annotated[
        bool, typer.Option("--retrain", help="The retrain-and-compress pipeline instead of compress.")
    ] = False,
    entrypoint: Annotated[
        str,
        typer.Option(
            "--train-entrypoint", help="Default training entry point (module:callable); --retrain only."
        ),
    ] = "",
    name: Annotated[
        str | None, typer.Option("--name", help="Pipeline name (default: squeezeflow-<job>).")
    ] = None,
    secret: SecretOpt = DEFAULT_SECRET,
    secret_keys: SecretKeysOpt = _ALL_KEYS,
    parallelism: ParallelismOpt = DEFAULT_PARALLELISM,
    benchmark_cpu: BenchCpuOpt = "2",
    image: ImageOpt = None,
    trial_gpu: TrialGpuOpt = 0,
    gpu_resource: GpuResourceOpt = DEFAULT_GPU_RESOURCE,
    gpu_node_selector: GpuNodeSelectorOpt = None,
) -> None:
    """Stamp a pipeline whose run form is prefilled from SPEC (its JSON as the `spec` parameter's default,
    and its values as the defaults of every field of the run form, the one the Airflow DAGs offer)."""
    from squeezeflow.errors import SqueezeflowError
    from squeezeflow.kfp import pipelines

    opts = _options(
        secret, secret_keys, parallelism, benchmark_cpu, trial_gpu, gpu_resource, gpu_node_selector
    )
    try:
        doc = pipelines.spec_document(spec)
        for what, uri in (
            ("model", (doc.get("model") or {}).get("uri", "")),
            ("data", (doc.get("data") or {}).get("uri", "")),
        ):
            if not str(uri).startswith("s3://"):
                typer.echo(
                    f"warning: the {what} URI {uri!r} is not s3://: "
                    "pods can only read it if it is on their image",
                    err=True,
                )
        pipelines.stamp(spec, out, retrain=retrain, entrypoint=entrypoint, opts=opts, image=image, name=name)
    except SqueezeflowError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {out}: upload it in the Kubeflow UI (Pipelines > Upload pipeline)")
