"""Kubeflow Pipelines (v2) components, one per stage.

Each component runs in the project's image (:data:`squeezeflow.kfp.IMAGE`, built from the repository's
``Dockerfile``), which has squeezeflow and kfp installed, and is one call into
:mod:`squeezeflow.kfp.steps`. Stage records travel as small JSON handles in ``Dataset``/``Model``
artifacts and as JSON string parameters; the ONNX files stay in the artifact store.

These functions are compiled by KFP from their source, so each imports what it uses inside its body
(this module must not use ``from __future__ import annotations``: KFP reads the annotations).
"""

from typing import List  # noqa: UP035 - KFP reads these annotations

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from squeezeflow.kfp import IMAGE

_OPTS = {"base_image": IMAGE, "install_kfp_package": False}


@dsl.component(**_OPTS)
def retrain(
    spec: str,
    model: Output[Model],
    entrypoint: str = "",
    train_kwargs: str = "{}",
    job_name: str = "",
    model_uri: str = "",
    data_uri: str = "",
) -> str:
    """Retrain the model with a user entry point (`module:callable` that writes a state_dict); returns
    the new model's URI in the artifact store (the `model_uri` given when `entrypoint` is empty)."""
    from squeezeflow.kfp import steps

    overrides = steps.overrides_from_params(job_name=job_name, model_uri=model_uri, data_uri=data_uri)
    return steps.retrain(spec, overrides, entrypoint, train_kwargs, model)


@dsl.component(**_OPTS)
def ingest(
    spec: str,
    dataset: Output[Dataset],
    job_name: str = "",
    model_uri: str = "",
    data_uri: str = "",
    max_drop: float = -1.0,
    tolerance_mode: str = "",
    objective: str = "",
    max_trials: int = 0,
    model_name: str = "",
    alias: str = "",
) -> float:
    """Validate the spec (with the run form's overrides) and the data, fingerprint the model. Returns the
    job's start time."""
    from squeezeflow.kfp import steps

    overrides = steps.overrides_from_params(
        job_name=job_name,
        model_uri=model_uri,
        data_uri=data_uri,
        max_drop=max_drop,
        tolerance_mode=tolerance_mode,
        objective=objective,
        max_trials=max_trials,
        model_name=model_name,
        alias=alias,
    )
    return steps.ingest(spec, overrides, dataset)


@dsl.component(**_OPTS)
def baseline(dataset: Input[Dataset], model: Output[Model], metrics: Output[Metrics]) -> None:
    """Export the trained model to ONNX and score it on the held-out split."""
    from squeezeflow.kfp import steps

    steps.baseline(dataset, model, metrics)


@dsl.component(**_OPTS)
def baseline_benchmark(dataset: Input[Dataset], baseline: Input[Model], metrics: Output[Metrics]) -> str:
    """Measure the baseline on every device profile of the spec."""
    from squeezeflow.kfp import steps

    return steps.baseline_benchmark(dataset, baseline, metrics)


@dsl.component(**_OPTS)
def plan(dataset: Input[Dataset], round_index: int = 0, previous: List[str] = []) -> List[str]:  # noqa: UP006, B006
    """Ask the search for one round's recipes (one ParallelFor iteration each). ``previous``, the last
    round's outcomes, only orders this step after them: the plan reads every trial from the store."""
    from squeezeflow.kfp import steps

    return steps.plan(dataset, round_index)


@dsl.component(**_OPTS)
def optimize(dataset: Input[Dataset], baseline: Input[Model], recipe: str, candidate: Output[Model]) -> str:
    """Build one candidate from a recipe (quantization, pruning, distillation passes)."""
    from squeezeflow.kfp import steps

    return steps.optimize(dataset, baseline, recipe, candidate)


@dsl.component(**_OPTS)
def gate(
    dataset: Input[Dataset],
    baseline: Input[Model],
    outcome: str,
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
) -> str:
    """Score one candidate against the accuracy gate (paired test against the baseline)."""
    from squeezeflow.kfp import steps

    return steps.gate(dataset, baseline, outcome, metrics, confusion)


@dsl.component(**_OPTS)
def benchmark(dataset: Input[Dataset], baseline: Input[Model], outcome: str, metrics: Output[Metrics]) -> str:
    """Measure one candidate on every device profile when it passed the gate, and record the trial."""
    from squeezeflow.kfp import steps

    return steps.benchmark(dataset, baseline, outcome, metrics)


@dsl.component(**_OPTS)
def trial(
    dataset: Input[Dataset],
    baseline: Input[Model],
    recipe: str,
    candidate: Output[Model],
    gate_metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    benchmark_metrics: Output[Metrics],
) -> str:
    """One trial of the search: build the candidate from its recipe, measure it first (a candidate slower
    than the baseline is not evaluated), score it against the accuracy gate, benchmark it on every device
    profile if it passed, and record it for the next round's plan. Returns the trial's outcome."""
    from squeezeflow.kfp import steps

    return steps.trial(dataset, baseline, recipe, candidate, gate_metrics, confusion, benchmark_metrics)


@dsl.component(**_OPTS)
def gate_verdict(
    dataset: Input[Dataset],
    summary: Output[Markdown],
    previous: List[str] = [],  # noqa: UP006, B006
) -> bool:
    """Whether any candidate of the search passed the accuracy gate (``previous``, the last round's
    outcomes, orders this step after the search)."""
    from squeezeflow.kfp import steps

    return steps.gate_verdict(dataset, summary)


@dsl.component(**_OPTS)
def promote(
    dataset: Input[Dataset],
    baseline: Input[Model],
    baseline_benchmarks: str,
    promoted_model: Output[Model],
    metrics: Output[Metrics],
    report: Output[HTML],
    report_markdown: Output[Markdown],
    started: float = 0.0,
    previous: List[str] = [],  # noqa: UP006, B006
) -> str:
    """Promote the best eligible candidate of the search in the MLflow registry (or nothing) and write the
    report. Returns the job result as JSON. ``previous``, the last round's outcomes, orders this step
    after the search; the candidates are read from the store."""
    from squeezeflow.kfp import steps

    return steps.promote(
        dataset,
        baseline,
        baseline_benchmarks,
        started,
        promoted_model,
        metrics,
        report,
        report_markdown,
    )


__all__ = [
    "baseline",
    "baseline_benchmark",
    "benchmark",
    "gate",
    "gate_verdict",
    "ingest",
    "optimize",
    "plan",
    "promote",
    "retrain",
    "trial",
]
