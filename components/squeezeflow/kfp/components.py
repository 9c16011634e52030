"""Kubeflow Pipelines (v2) components, one per stage.

Each component runs in the project's image (:data:`squeezeflow.kfp.IMAGE`, built from the repository's
``Dockerfile``), which has squeezeflow and kfp installed, and is one call into
:mod:`squeezeflow.kfp.steps`. Stage records travel as small JSON handles in ``Dataset``/``Model``
artifacts and as JSON string parameters; the ONNX files stay in the artifact store.

These functions are compiled by KFP from their source, so each imports what it uses inside its body
(this module must not use ``from __future__ import annotations``: KFP reads the annotations).
"""

from typing import List, NamedTuple  # noqa: UP035 - KFP reads these annotations

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from squeezeflow.kfp import IMAGE

_OPTS = {"base_image": IMAGE, "install_kfp_package": False}


# The run form's fields (`squeezeflow.spec.run_form.FIELDS`) are written out in `retrain` and `ingest`: KFP
# compiles a component from its source, so its signature cannot be generated. A unit test keeps both equal
# to the table; the pipelines' parameters are generated from it. Their defaults mean "unset" (""/-1/[]:
# `squeezeflow.spec.run_form.unset_value`), not None, which kfp.local cannot pass to an int input.


@dsl.component(**_OPTS)
def retrain(
    spec: str,
    model: Output[Model],
    entrypoint: str = "",
    train_kwargs: str = "{}",
    job_name: str = "",
    model_uri: str = "",
    model_format: str = "",
    model_factory: str = "",
    data_uri: str = "",
    objective: str = "",
    max_drop: float = -1.0,
    tolerance_mode: str = "",
    max_trials: int = -1,
    max_seconds: float = -1.0,
    rounds: int = -1,
    parallel_trials: int = -1,
    devices: list = [],  # noqa: B006
    target_device: str = "",
    model_name: str = "",
    alias: str = "",
) -> str:
    """Retrain the model with a user entry point (`module:callable` that writes a state_dict); returns
    the new model's URI in the artifact store (the `model_uri` given when `entrypoint` is empty)."""
    form = dict(locals())  # the run form's values (and the other inputs, which it ignores)
    from squeezeflow.kfp import steps

    return steps.retrain(spec, form, entrypoint, train_kwargs, model)


@dsl.component(**_OPTS)
def ingest(
    spec: str,
    dataset: Output[Dataset],
    job_name: str = "",
    model_uri: str = "",
    model_format: str = "",
    model_factory: str = "",
    data_uri: str = "",
    objective: str = "",
    max_drop: float = -1.0,
    tolerance_mode: str = "",
    max_trials: int = -1,
    max_seconds: float = -1.0,
    rounds: int = -1,
    parallel_trials: int = -1,
    devices: list = [],  # noqa: B006
    target_device: str = "",
    model_name: str = "",
    alias: str = "",
) -> str:
    """Validate the spec (with the run form's values; an empty spec: the form alone) and the data,
    fingerprint the model. Returns the ingest record as JSON."""
    form = dict(locals())  # the run form's values (and the other inputs, which it ignores)
    from squeezeflow.kfp import steps

    return steps.ingest(spec, form, dataset)


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
    previous: List[str] = [],  # noqa: UP006, B006
) -> NamedTuple(  # type: ignore[valid-type]
    "Champion",
    [
        ("promoted", bool),
        ("registered_model", str),
        ("version", str),
        ("alias", str),
        ("model_uri", str),
        ("result", str),
    ],
):
    """Promote the best eligible candidate of the search in the MLflow registry (or nothing) and write the
    report. ``previous``, the last round's outcomes, orders this step after the search; the candidates
    are read from the store.

    Returns:
        promoted: Whether a new version now holds the alias.
        registered_model: The MLflow registered model (the target, also when nothing was promoted).
        version: The promoted version (empty when nothing was promoted).
        alias: The registry alias a promotion moves.
        model_uri: The promoted version's MLflow model URI, models:/<name>/<version> (empty: none).
        result: The job result as JSON (every candidate, the gate, the benchmarks, the promotion).
    """
    from squeezeflow.kfp import steps

    out = steps.promote(
        dataset, baseline, baseline_benchmarks, promoted_model, metrics, report, report_markdown
    )
    return tuple(out[name] for name in steps.CHAMPION_OUTPUTS)  # the NamedTuple's order


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
