"""The Kubeflow pipelines: compress, and retrain-and-compress.

::

    ingest -> baseline -> baseline benchmark
                       -> round 0..N: plan -> ParallelFor(recipe in plan): trial
                          (a trial: build -> latency first -> gate -> benchmark -> record)
                       -> gate verdict (Collected) -> If passed:  promote (registry alias, report)
                                                      Else:       summarize (same step, nothing moves)

Parameters the run form shows: ``spec`` (a job spec as JSON/YAML text, an ``s3://`` URI of one, or empty)
and the run form's fields (`squeezeflow.spec.run_form.FIELDS`, the Airflow DAGs' trigger params too),
generated with their descriptions. An empty string, -1 in a numeric field or ``[]`` mean "as in the
spec"; with ``spec`` empty the fields alone make the job. `stamp` makes a per-model pipeline whose form is
prefilled from a spec (``squeezeflow kfp compile``). The pipelines' outputs (`Champion`) name the promoted
model.

Deployment settings are not parameters: every task maps the environment that :meth:`Settings.resolve`
reads from one Kubernetes secret (``secret_name``, a compile-time option), key name = variable name::

    kubectl create secret generic squeezeflow \\
      --from-literal=MLFLOW_TRACKING_URI=http://mlflow.mlflow:5000 \\
      --from-literal=SQUEEZEFLOW_ARTIFACTS=s3://models/squeezeflow \\
      --from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=... \\
      --from-literal=AWS_ENDPOINT_URL_S3=http://minio.minio:9000

Caching is off for every task: the stages reuse their own content-addressed records, and promotion
must see the registry as it is now.
"""

# No `from __future__ import annotations`: KFP reads the pipeline functions' annotations at runtime.

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from squeezeflow.spec.load import parse_spec, spec_folder
from squeezeflow.spec.run_form import FIELDS, FormField, form_defaults, spec_defaults, unset_value

#: Environment variables mapped from the Kubernetes secret (key name = variable name). The first two
#: must be in the secret; the others are optional (IRSA / workload identity needs no keys, AWS no
#: endpoint, an MLflow without authentication no credentials).
REQUIRED_SECRET_ENV: tuple[str, ...] = ("MLFLOW_TRACKING_URI", "SQUEEZEFLOW_ARTIFACTS")
OPTIONAL_SECRET_ENV: tuple[str, ...] = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)
SECRET_ENV: tuple[str, ...] = REQUIRED_SECRET_ENV + OPTIONAL_SECRET_ENV
#: The chart's secret (charts/squeezeflow values `envSecret.name`).
DEFAULT_SECRET = "squeezeflow-env"
#: The label the chart's MLflow NetworkPolicy admits (values `mlflow.networkPolicy.clientLabel`).
MLFLOW_CLIENT_LABEL = ("squeezeflow.io/mlflow-client", "true")
DEFAULT_PARALLELISM = 4
#: The extended resource a GPU is requested as (the NVIDIA device plugin's; charts/squeezeflow values
#: `runner.gpu.resourceName`), and the taint GPU node pools usually carry (values `runner.gpu.tolerations`).
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_GPU_TOLERATIONS: tuple[Mapping[str, str], ...] = (
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
)
#: The spec's default `search.rounds` (a generic pipeline has no spec at compile time).
DEFAULT_SEARCH_ROUNDS = 6


@dataclass(frozen=True)
class FormDefaults:
    """What the run form shows before anyone edits it: the ``spec`` parameter, and the run form's fields
    (`squeezeflow.spec.run_form.FIELDS`), each unset (``None``) in the generic pipeline."""

    spec: str = ""
    fields: Mapping[str, Any] = field(default_factory=lambda: form_defaults(None))

    @classmethod
    def from_spec(cls, doc: Mapping[str, Any], base_dir: Path | None = None) -> "FormDefaults":
        """Defaults stamped from a job spec document as written (``spec``) and as validated (the fields:
        the spec's values, its defaults where it sets none; local paths against ``base_dir``)."""
        job = parse_spec(dict(doc), source="<stamped spec>", base_dir=base_dir)
        return cls(spec=json.dumps(dict(doc), sort_keys=True), fields=form_defaults(job))

    @property
    def stamped(self) -> bool:
        return any(v is not None for v in self.fields.values())


@dataclass(frozen=True)
class PipelineOptions:
    """Compile-time options."""

    secret_name: str | None = DEFAULT_SECRET
    secret_env: Sequence[str] = field(default=SECRET_ENV)
    parallelism: int = DEFAULT_PARALLELISM
    benchmark_cpu: str | None = "2"
    """CPU request and limit of the benchmark tasks (a profile's threads need cores of their own)."""
    rounds: int = 1 + DEFAULT_SEARCH_ROUNDS
    """Search rounds the pipeline is unrolled to (round 0, the cheap candidates, and the searched ones);
    a search that stops earlier runs the rest as no-ops. A stamped pipeline takes its spec's."""
    trial_cpu: str | None = None
    trial_memory: str | None = "4G"
    trial_gpu: int = 0
    """CPU (default: ``benchmark_cpu``) and memory of a trial, and GPUs for its fine-tuning (0: none; a
    pipeline stamped from a spec with ``training.device: cuda`` asks for one)."""
    gpu_resource: str = DEFAULT_GPU_RESOURCE
    """What a trial's GPUs are requested as (``set_accelerator_type``)."""
    gpu_node_selector: Mapping[str, str] = field(default_factory=dict)
    """Node labels a trial that asks for a GPU must land on (a GPU node pool's)."""
    gpu_tolerations: Sequence[Mapping[str, str]] = DEFAULT_GPU_TOLERATIONS
    """Tolerations of a trial that asks for a GPU (``key``, ``operator``, ``value``, ``effect``)."""


def _configure(task: Any, opts: PipelineOptions, name: str, *, settings: bool = True) -> Any:
    task.set_display_name(name)
    task.set_caching_options(False)
    if settings and opts.secret_name:
        from kfp import kubernetes

        required = [k for k in opts.secret_env if k in REQUIRED_SECRET_ENV]
        optional = [k for k in opts.secret_env if k not in REQUIRED_SECRET_ENV]
        if required:
            kubernetes.use_secret_as_env(
                task, secret_name=opts.secret_name, secret_key_to_env={k: k for k in required}
            )
        if optional:
            kubernetes.use_secret_as_env(
                task, secret_name=opts.secret_name, secret_key_to_env={k: k for k in optional}, optional=True
            )
    if settings:
        from kfp import kubernetes

        kubernetes.add_pod_label(task, *MLFLOW_CLIENT_LABEL)
    return task


def _benchmark_resources(task: Any, opts: PipelineOptions) -> None:
    if opts.benchmark_cpu:
        task.set_cpu_request(opts.benchmark_cpu).set_cpu_limit(opts.benchmark_cpu)


def _trial_resources(task: Any, opts: PipelineOptions) -> None:
    """What one trial (a candidate's build, which may fine-tune, then its gate and benchmark) asks of its
    node: CPU requested and limited alike (the benchmark's threads need cores of their own), memory, and
    GPUs for fine-tuning when asked."""
    cpu = opts.trial_cpu or opts.benchmark_cpu
    if cpu:
        task.set_cpu_request(cpu).set_cpu_limit(cpu)
    if opts.trial_memory:
        task.set_memory_request(opts.trial_memory)
    if opts.trial_gpu:
        from kfp import kubernetes

        task.set_accelerator_type(opts.gpu_resource).set_accelerator_limit(opts.trial_gpu)
        for label, value in opts.gpu_node_selector.items():
            kubernetes.add_node_selector(task, label, value)
        for t in opts.gpu_tolerations:
            kubernetes.add_toleration(task, **dict(t))


class Champion(NamedTuple):
    """The compress pipelines' outputs (from the promote step, whichever branch ran it)."""

    promoted: bool
    registered_model: str
    version: str
    alias: str
    model_uri: str
    result: str


CHAMPION_DOC = """
Returns:
    promoted: Whether a new version of the registered model now holds the alias.
    registered_model: The MLflow registered model (the target, also when nothing was promoted).
    version: The promoted version (empty when nothing was promoted).
    alias: The registry alias a promotion moves.
    model_uri: The promoted version's MLflow model URI, models:/<name>/<version> (empty: none).
    result: The job result as JSON: every candidate, its gate verdict and benchmarks, the promotion.
"""


def _compression(ing: Any, opts: PipelineOptions) -> Champion:
    """Everything after ingest; ``ing`` is the ingest task. Returns the pipeline's outputs."""
    from kfp import dsl

    from squeezeflow.kfp import components as c

    dataset = ing.outputs["dataset"]
    base = _configure(c.baseline(dataset=dataset), opts, "baseline")
    base_model = base.outputs["model"]
    base_bench = _configure(
        c.baseline_benchmark(dataset=dataset, baseline=base_model), opts, "baseline benchmark"
    )
    _benchmark_resources(base_bench, opts)
    trials: Any = None
    for index in range(opts.rounds):
        # Round k asks the study, rebuilt from the trials recorded so far; it waits for round k-1 through
        # `previous` (its outcomes), and reads the trials themselves from the store.
        ask = (
            c.plan(dataset=dataset, round_index=index)
            if trials is None
            else c.plan(dataset=dataset, round_index=index, previous=dsl.Collected(trials.outputs["Output"]))
        )
        planned = _configure(
            ask, opts, "plan: cheap candidates" if index == 0 else f"plan: search round {index}"
        )
        if index == 0:
            planned.after(base_bench)
        # Only the loop item, pipeline parameters and artifacts enter the loop body: kfp.local (2.17)
        # replaces every task-output *parameter* passed into a ParallelFor with the loop item.
        with dsl.ParallelFor(planned.output, parallelism=opts.parallelism) as recipe:
            trials = _configure(c.trial(dataset=dataset, baseline=base_model, recipe=recipe), opts, "trial")
            _trial_resources(trials, opts)

    def promote(display: str) -> Any:
        task = c.promote(
            dataset=dataset,
            baseline=base_model,
            baseline_benchmarks=base_bench.outputs["Output"],
            previous=dsl.Collected(trials.outputs["Output"]),
        )
        return _configure(task, opts, display)

    verdict = _configure(
        c.gate_verdict(dataset=dataset, previous=dsl.Collected(trials.outputs["Output"])),
        opts,
        "gate verdict",
    )
    with dsl.If(verdict.outputs["Output"] == True, name="a candidate passed"):  # noqa: E712 - a KFP condition
        promoted = promote("promote")
    with dsl.Else(name="nothing passed"):
        summarized = promote("summarize (nothing passed the gate)")
    return Champion(
        *(dsl.OneOf(promoted.outputs[name], summarized.outputs[name]) for name in Champion._fields)
    )


_PY_TYPES: dict[str, type] = {"string": str, "number": float, "integer": int, "array": list}


def _shown(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _describe(f: FormField, stamped: bool) -> str:
    """A form field's description in the Kubeflow UI (which cannot check bounds, so they are said)."""
    text = f"{f.title}. {f.description.rstrip('.')}."
    if f.hint():
        text += f" Must be {f.hint()}."
    text += f" Sets the spec's `{f.spec_field}`."
    if stamped:
        return text + " Default: the stamped spec's value."
    unset = "-1" if f.type in ("number", "integer") else "Empty"
    if f.required:
        return text + f" {unset}: as in `spec`; required when `spec` is empty."
    default = spec_defaults()[f.name]
    if f.type == "array" or default is None:
        return text + f" {unset}: as in `spec` (or the spec's default)."
    return text + f" {unset}: as in `spec` (or the spec's default, {_shown(default)})."


def _form_parameters(defaults: FormDefaults) -> tuple[list[inspect.Parameter], list[str]]:
    """The run form's fields as pipeline parameters (generated from `squeezeflow.spec.run_form.FIELDS`), and
    their lines of the pipeline's docstring (KFP takes a parameter's description from its "Args:")."""
    stamped = defaults.stamped
    params, docs = [], []
    for f in FIELDS:
        # Never None: kfp.local (2.17) cannot run a pipeline with an optional parameter that has no default
        value = defaults.fields.get(f.name)
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=unset_value(f) if value is None else value,
                annotation=_PY_TYPES[f.type],
            )
        )
        docs.append(f"    {f.name}: {_describe(f, stamped)}")
    return params, docs


def _pipeline_function(
    body: Callable[[dict[str, Any]], Champion],
    leading: Sequence[tuple[str, type, Any, str]],
    defaults: FormDefaults,
    name: str,
) -> Callable[..., Champion]:
    """A pipeline function with the ``leading`` parameters (name, type, default, description) and then the
    run form's fields: its signature and docstring are what KFP compiles into the run form. ``body``
    gets every parameter by name."""
    form, form_docs = _form_parameters(defaults)
    params = [
        inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d, annotation=t)
        for n, t, d, _ in leading
    ] + form
    names = [p.name for p in params]

    def pipeline(*args: Any) -> Champion:
        # KFP calls a pipeline function with its parameters' channels in signature order
        return body(dict(zip(names, args, strict=True)))

    pipeline.__name__ = pipeline.__qualname__ = name.replace("-", "_")
    pipeline.__signature__ = inspect.Signature(params, return_annotation=Champion)  # type: ignore[attr-defined]
    lines = [f"    {n}: {text}" for n, _, _, text in leading] + form_docs
    pipeline.__doc__ = "The run form.\n\nArgs:\n" + "\n".join(lines) + "\n" + CHAMPION_DOC
    return pipeline


SPEC_DOC = (
    "A job spec (JSON or YAML text, or an s3:// URI of a spec file) that the fields below change; empty: "
    "the fields alone make the job."
)


def build_compress(
    defaults: FormDefaults | None = None,
    opts: PipelineOptions | None = None,
    name: str = "squeezeflow-compress",
) -> Callable[..., Any]:
    """The compress pipeline, with the run form's defaults and the compile-time options given."""
    from kfp import dsl

    from squeezeflow.kfp import components as c

    d = defaults or FormDefaults()
    o = opts or PipelineOptions()

    def body(values: dict[str, Any]) -> Champion:
        ing = c.ingest(**values)
        return _compression(_configure(ing, o, "ingest"), o)

    fn = _pipeline_function(body, [("spec", str, d.spec, SPEC_DOC)], d, name)
    return dsl.pipeline(
        name=name,
        description="Compress a trained model (int8 quantization, pruning, distillation), gate it on "
        "accuracy, benchmark it and promote the best passing candidate in the MLflow registry.",
    )(fn)


def build_retrain_and_compress(
    defaults: FormDefaults | None = None,
    opts: PipelineOptions | None = None,
    name: str = "squeezeflow-retrain-and-compress",
    entrypoint: str = "",
    train_kwargs: str = "{}",
) -> Callable[..., Any]:
    """Retrain (optional: skipped when ``train_entrypoint`` is empty), then the same compression."""
    from kfp import dsl

    from squeezeflow.kfp import components as c

    d = defaults or FormDefaults()
    o = opts or PipelineOptions()

    def body(values: dict[str, Any]) -> Champion:
        form = {f.name: values[f.name] for f in FIELDS}
        trained = _configure(
            c.retrain(
                spec=values["spec"],
                entrypoint=values["train_entrypoint"],
                train_kwargs=values["train_kwargs"],
                **form,
            ),
            o,
            "retrain",
        )
        ing = c.ingest(spec=values["spec"], **{**form, "model_uri": trained.outputs["Output"]})
        return _compression(_configure(ing, o, "ingest"), o)

    leading = [
        ("spec", str, d.spec, SPEC_DOC),
        (
            "train_entrypoint",
            str,
            entrypoint,
            "Training entry point, module:callable, called as fn(data_dir=..., output_path=..., "
            "base_model_uri=..., **train_kwargs); it writes a state_dict. Empty: compress the model as "
            "it is.",
        ),
        ("train_kwargs", str, train_kwargs, "Keyword arguments of the entry point, a JSON object."),
    ]
    fn = _pipeline_function(body, leading, d, name)
    return dsl.pipeline(
        name=name,
        description="Retrain a model with your training entry point (module:callable writing a state_dict), "
        "then compress, gate, benchmark and promote it.",
    )(fn)


def compile_pipeline(pipeline: Callable[..., Any], out: Path, image: str | None = None) -> Path:
    """Compile ``pipeline`` to ``out`` (KFP IR YAML); ``image`` replaces the components' image."""
    from kfp import compiler

    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, str(out))
    if image:
        from squeezeflow.kfp import IMAGE

        docs = list(yaml.safe_load_all(out.read_text()))
        for ex in docs[0]["deploymentSpec"]["executors"].values():
            if ex.get("container", {}).get("image") == IMAGE:
                ex["container"]["image"] = image
        out.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return out


def spec_document(path: Path) -> dict[str, Any]:
    """A spec file's document as written, after validating it."""
    from squeezeflow.spec.document import read_spec_file
    from squeezeflow.spec.load import parse_spec

    doc = read_spec_file(path)
    parse_spec(doc, source=str(path), base_dir=spec_folder(path))
    return dict(doc)


def pipeline_name(job: str) -> str:
    """A KFP pipeline name for a job: lower case, dashes."""
    return "squeezeflow-" + "".join(ch if ch.isalnum() else "-" for ch in job.lower()).strip("-")


def stamp(
    spec_path: Path,
    out: Path,
    *,
    retrain: bool = False,
    entrypoint: str = "",
    opts: PipelineOptions | None = None,
    image: str | None = None,
    name: str | None = None,
) -> Path:
    """A per-model pipeline: the run form prefilled from the spec at ``spec_path``."""
    import dataclasses

    from squeezeflow.search.rounds import rounds_of
    from squeezeflow.spec.load import parse_spec

    doc = spec_document(spec_path)
    defaults = FormDefaults.from_spec(doc, base_dir=spec_folder(spec_path))
    pname = name or pipeline_name(str(doc["name"]))
    # unrolled to the spec's rounds (a run form's max_trials can stop the search earlier, not extend it)
    job = parse_spec(doc, source=str(spec_path), base_dir=spec_folder(spec_path))
    opts = dataclasses.replace(opts or PipelineOptions(), rounds=rounds_of(job))
    if job.training.device == "cuda" and not opts.trial_gpu:
        # the trials fine-tune on a GPU: ask for one (a trial without one would refuse to start)
        opts = dataclasses.replace(opts, trial_gpu=1)
    if retrain:
        fn = build_retrain_and_compress(defaults, opts, name=pname, entrypoint=entrypoint)
    else:
        fn = build_compress(defaults, opts, name=pname)
    return compile_pipeline(fn, out, image=image)
