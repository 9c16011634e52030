"""DAGs from job specs.

`compress_dag` builds the compression DAG for one job spec::

    resolve_spec -> ingest -> baseline -> baseline_benchmark
      -> plan -> optimize[recipe] -> gate[candidate] -> benchmark[candidate]     (round 0: int8 variants)
      -> plan_r1 -> optimize_r1[recipe] -> gate_r1[...] -> benchmark_r1[...]    (round 1: asked of the study)
      -> ... (1 + search.rounds rounds, unrolled when the DAG is parsed)
      -> promote

Each round's stages are mapped over its plan (one task instance per recipe, in parallel on the executor's
workers). A round plans nothing once the search stops (budget, patience), and its mapped tasks are
skipped.

`dags_from_folder` turns every ``*.yaml`` job spec in a folder into one such DAG (the platform-team
template: one spec per model). A spec that does not validate produces no DAG and a warning naming the
file and the field, which Airflow shows as an import warning of the factory's DAG file; the other specs'
DAGs are unaffected.

Every factory takes ``artifacts``, the artifact store root. Unset, each stage task resolves it when it
runs (not when the DAG file is parsed): the Airflow Variable ``squeezeflow_artifacts``, else the worker's
``SQUEEZEFLOW_ARTIFACTS`` (`squeezeflow.airflow.hooks.artifacts_location`). In pod mode the pods read
``SQUEEZEFLOW_ARTIFACTS`` from their Kubernetes Secret instead.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, Param

from squeezeflow.airflow.hooks import DEFAULT_AWS_CONN_ID, DEFAULT_MLFLOW_CONN_ID
from squeezeflow.airflow.layout import CANDIDATE_LABEL, round_task_id
from squeezeflow.airflow.operators import (
    SqueezeflowBaselineBenchmarkOperator,
    SqueezeflowBaselineOperator,
    SqueezeflowBenchmarkOperator,
    SqueezeflowChampionOperator,
    SqueezeflowGateOperator,
    SqueezeflowIngestOperator,
    SqueezeflowOptimizeOperator,
    SqueezeflowPlanOperator,
    SqueezeflowPromoteOperator,
    SqueezeflowResolveSpecOperator,
)
from squeezeflow.errors import InvalidInputError

log = logging.getLogger(__name__)

START = datetime(2026, 1, 1)

# Retries of a failed stage (an unreachable service; bad input fails without retries): 30 s, then about
# twice as long each time (Airflow adds up to one delay of jitter), never more than 10 minutes. Airflow
# 3.3 reads `retry_exponential_backoff` as the multiplier: `True` (1) would retry every 30 s.
RETRY_DELAY = timedelta(seconds=30)
RETRY_BACKOFF = 2.0
MAX_RETRY_DELAY = timedelta(minutes=10)


class SpecImportWarning(UserWarning):
    """A job spec could not be read or did not validate when a DAG file was parsed: `dags_from_folder`
    made no DAG from it; the retrain DAG was made, and its runs fail until the spec is fixed."""


def baseline_asset(job_name: str) -> Asset:
    """The asset a new baseline of ``job_name`` is announced on (its events carry ``model_uri``)."""
    return Asset(name=f"squeezeflow-baseline-{job_name}", uri=f"squeezeflow://baselines/{job_name}")


def champion_asset(model_name: str, alias: str) -> Asset:
    """The asset a new champion of ``model_name@alias`` is announced on (its events carry ``model_name``,
    ``version``, ``alias`` and ``model_uri``): schedule a deploy DAG on it."""
    return Asset(
        name=f"squeezeflow-champion-{model_name}-{alias}", uri=f"squeezeflow://champions/{model_name}/{alias}"
    )


def dag_id_for(job_name: str, prefix: str = "squeezeflow_compress_") -> str:
    return prefix + re.sub(r"[^A-Za-z0-9_]", "_", job_name)


def run_params(spec: Mapping[str, Any]) -> dict[str, Param]:
    """The typed params a person fills in when triggering from the UI, one per field of the run form
    (`squeezeflow.spec.run_form.FIELDS`, the Kubeflow pipelines' parameters too). Defaults come from the spec,
    bounds and choices from the job spec's schema; the job spec validates the result (an invalid value
    fails `resolve_spec`, naming the field)."""
    from squeezeflow.spec.run_form import FIELDS, form_defaults

    defaults = form_defaults(spec)
    params: dict[str, Param] = {}
    for f in FIELDS:
        schema: dict[str, Any] = dict(f.constraints)
        if f.type == "array":
            schema["items"] = {"type": ["object", "string"]}
        # null: keep the spec's value (and the spec's own value may be null)
        nullable = f.nullable or f.type == "array" or defaults[f.name] is None
        if nullable and "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
        params[f.name] = Param(
            defaults[f.name],
            type=["null", f.type] if nullable else f.type,
            title=f.title,
            description=f"{f.description} (spec field `{f.spec_field}`)",
            **schema,
        )
    return params


def add_compress_tasks(
    dag: DAG,
    spec_source: str,
    *,
    mlflow_conn_id: str | None = DEFAULT_MLFLOW_CONN_ID,
    aws_conn_id: str | None = DEFAULT_AWS_CONN_ID,
    artifacts: str | None = None,
    workdir: str | None = None,
    overrides: Any = None,
    upstream: Any = None,
    pods: Any = None,
    rounds: int | None = None,
    champion: Asset | None = None,
    parallel_trials: int | None = None,
    gpu: bool | None = None,
) -> Any:
    """Add the compression tasks to ``dag``, the search unrolled to ``rounds`` rounds (default: what the
    spec asks, ``1 + search.rounds``); returns the promote task. ``artifacts`` unset: see the module
    docstring. With ``pods`` (`squeezeflow.airflow.pods.PodSettings`) every stage runs in its own pod with
    the project's image and reads its settings from a Kubernetes secret instead of Airflow connections and
    Variables.

    Each mapped stage task runs at most ``parallel_trials`` instances at once in a DAG run (Airflow's
    ``max_active_tis_per_dagrun``; default the spec's ``search.parallel_trials``), so a spec that lists
    more recipes than that, or a deployment with more worker slots, never builds more candidates side by
    side than the spec allows. The scheduler enforces it; no pool has to exist.

    In pod mode the optimize pods (which train) ask for a GPU when ``gpu`` is true (default: when the
    spec says ``training.device: cuda``), with the GPU resource, node selector and tolerations of
    ``pods``."""
    cap = parallel_trials if parallel_trials is not None else _parallel_trials(spec_source)
    if pods is not None:
        from squeezeflow.airflow.pods import add_pod_tasks

        return add_pod_tasks(
            dag,
            spec_source,
            pods,
            overrides=overrides,
            upstream=upstream,
            rounds=rounds if rounds is not None else _rounds(spec_source),
            parallel_trials=cap,
            gpu=gpu if gpu is not None else _trains_on_gpu(spec_source),
        )
    common: dict[str, Any] = {
        "mlflow_conn_id": mlflow_conn_id,
        "aws_conn_id": aws_conn_id,
        "artifacts": artifacts,
        "workdir": workdir,
    }
    rounds = rounds if rounds is not None else _rounds(spec_source)
    with dag:
        spec = SqueezeflowResolveSpecOperator(
            task_id="resolve_spec", spec_source=spec_source, overrides=overrides, aws_conn_id=aws_conn_id
        )
        if upstream is not None:
            upstream >> spec
        ingest = SqueezeflowIngestOperator(task_id="ingest", spec=spec.output, **common)
        base = SqueezeflowBaselineOperator(
            task_id="baseline", spec=spec.output, ingest=ingest.output, **common
        )
        base_bench = SqueezeflowBaselineBenchmarkOperator(
            task_id="baseline_benchmark",
            spec=spec.output,
            ingest=ingest.output,
            baseline=base.output,
            **common,
        )
        measured: Any = None
        for index in range(rounds):
            # Round k is planned from the trials of rounds 0..k-1 (recorded in the artifact store); an
            # empty plan skips the round's mapped tasks, so later rounds and promotion run on
            # "none_failed" (skipped upstream is fine, a failed one is not).
            plan = SqueezeflowPlanOperator(
                task_id=round_task_id("plan", index),
                spec=spec.output,
                ingest=ingest.output,
                round_index=index,
                trigger_rule="none_failed",
                **common,
            )
            # Only ordered after the previous round (no data: a round that planned nothing has no output).
            (base_bench if measured is None else measured) >> plan
            # What every mapped stage of a round shares: its label in the UI, the cap on trials built side by
            # side, and the job's inputs.
            mapped: dict[str, Any] = dict(
                map_index_template=CANDIDATE_LABEL,
                max_active_tis_per_dagrun=cap,
                spec=spec.output,
                ingest=ingest.output,
                baseline=base.output,
                **common,
            )
            built = SqueezeflowOptimizeOperator.partial(
                task_id=round_task_id("optimize", index), **mapped
            ).expand(recipe=plan.output)
            gated = SqueezeflowGateOperator.partial(task_id=round_task_id("gate", index), **mapped).expand(
                outcome=built.output
            )
            measured = SqueezeflowBenchmarkOperator.partial(
                task_id=round_task_id("benchmark", index), **mapped
            ).expand(outcome=gated.output)
        promote = SqueezeflowPromoteOperator(
            task_id="promote",
            spec=spec.output,
            ingest=ingest.output,
            baseline=base.output,
            baseline_benchmarks=base_bench.output,
            trigger_rule="none_failed",
            **common,
        )
        measured >> promote
        if champion is not None:
            SqueezeflowChampionOperator(
                task_id="announce_champion", result=promote.output, outlets=[champion]
            )
    return promote


def _parallel_trials(spec_source: Any, doc: Mapping[str, Any] | None = None) -> int | None:
    """The spec's ``search.parallel_trials`` as the DAG file reads it (None, no cap, when the spec cannot
    be read: `resolve_spec` then fails the run with the spec's message)."""
    from squeezeflow import tasks

    try:
        job = tasks.job_of(doc if doc is not None else tasks.resolve_spec(spec_source))
    except Exception:
        return None
    return job.search.parallel_trials


def _trains_on_gpu(spec_source: Any, doc: Mapping[str, Any] | None = None) -> bool:
    """Whether the spec, as the DAG file reads it, trains on a GPU (``training.device: cuda``; ``auto``
    takes a GPU where the pod finds one, and asks for none). False when the spec cannot be read."""
    from squeezeflow import tasks

    try:
        job = tasks.job_of(doc if doc is not None else tasks.resolve_spec(spec_source))
    except Exception:
        return False
    return job.training.device == "cuda"


def _rounds(spec_source: Any, doc: Mapping[str, Any] | None = None) -> int:
    """How many rounds to unroll: ``1 + search.rounds`` of the spec as the DAG file reads it (a run's
    overrides cannot add rounds to a parsed DAG; a search that stops earlier skips the rest)."""
    from squeezeflow import tasks
    from squeezeflow.search.rounds import rounds_of

    if doc is None:
        try:
            doc = tasks.resolve_spec(spec_source)
        except Exception as err:  # an unreadable spec fails again, with its message, in resolve_spec
            log.warning("cannot read %s to unroll the search rounds (%s); one round only", spec_source, err)
            return 1
    return rounds_of(tasks.job_of(doc))


DAG_DOC = """
#### squeezeflow compression

Compresses the job's baseline model: candidates are built in parallel (one mapped `optimize` task per
recipe), each is screened (latency first) and scored by the accuracy **gate** on held-out data, the ones
that pass are **benchmarked** on the spec's device profiles, and the best eligible one (passed the gate,
faster and smaller on the target profile) is **promoted** in the MLflow registry.

* The search runs in rounds: `plan` plans the cheap int8 candidates, and each `plan_rK` asks the study
  (rebuilt from every trial recorded so far) for the next `search.parallel_trials` recipes, mapped over
  the workers; each mapped stage runs at most `search.parallel_trials` task instances at once. A round
  plans nothing once the search stops (trial or time budget, patience).
* If no candidate passes the gate, promotion promotes nothing and still writes the report: the run
  succeeds, and every candidate stays tracked in MLflow.
* The promote task's XCom `summary` holds the candidate table; its *MLflow run* and *Registered model*
  buttons open the run and the promoted version.
"""


def _dag(
    doc: Mapping[str, Any] | None,
    dag_id: str,
    schedule: Any,
    tags: list[str] | None,
    retries: int,
    doc_md: str,
    spec_source: str | Path | None = None,
) -> DAG:
    """The DAG itself; ``doc`` None: the spec at ``spec_source`` could not be read when the DAG was
    parsed (no run form; the run reads the spec again and fails with its message if it still cannot)."""
    if doc is None:
        description = f"Compress the job in {spec_source} (unreadable when this DAG was parsed)"
    else:
        description = (
            f"Compress {doc['name']} ({doc['model']['format']}) and promote it to "
            f"{doc['registry']['model_name']}@{doc['registry']['alias']}"
        )
    return DAG(
        dag_id=dag_id,
        description=description,
        schedule=schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["squeezeflow", *(tags or [])],
        params=run_params(doc) if doc is not None else {},
        doc_md=doc_md,
        default_args={
            "retries": retries,
            "retry_delay": RETRY_DELAY,
            "retry_exponential_backoff": RETRY_BACKOFF,
            "max_retry_delay": MAX_RETRY_DELAY,
        },
    )


def _spec_doc(spec_source: str | Path, spec: Mapping[str, Any] | None) -> dict[str, Any]:
    from squeezeflow import tasks

    return dict(spec) if spec is not None else tasks.resolve_spec(spec_source)


def compress_dag(
    spec_source: str | Path,
    *,
    dag_id: str | None = None,
    spec: Mapping[str, Any] | None = None,
    schedule: Any = None,
    tags: list[str] | None = None,
    mlflow_conn_id: str | None = DEFAULT_MLFLOW_CONN_ID,
    aws_conn_id: str | None = DEFAULT_AWS_CONN_ID,
    artifacts: str | None = None,
    workdir: str | None = None,
    retries: int = 2,
    pods: Any = None,
) -> DAG:
    """The compression DAG for the spec at ``spec_source``. The spec is read and validated now, at parse
    time (pass ``spec`` to reuse an already resolved document), and again at run time by `resolve_spec`,
    so an edited spec file takes effect on the next run."""
    doc = _spec_doc(spec_source, spec)
    dag = _dag(doc, dag_id or dag_id_for(doc["name"]), schedule, tags, retries, DAG_DOC)
    add_compress_tasks(
        dag,
        str(spec_source),
        mlflow_conn_id=mlflow_conn_id,
        aws_conn_id=aws_conn_id,
        artifacts=artifacts,
        workdir=workdir,
        pods=pods,
        rounds=_rounds(spec_source, doc),
        parallel_trials=_parallel_trials(spec_source, doc),
        champion=champion_asset(doc["registry"]["model_name"], doc["registry"]["alias"]),
        gpu=_trains_on_gpu(spec_source, doc) if pods is not None else None,
    )
    return dag


RETRAIN_DOC = (
    """
#### squeezeflow retrain and compress

`retrain` calls the training entry point (`module:callable`, `fn(data_dir, output_path, base_model_uri,
**train_kwargs)`, which writes a state_dict),
stores the new model in the artifact store and announces it on the job's baseline asset (event extra
`model_uri`); the compression tasks then run on the new model.
"""
    + DAG_DOC
)


def retrain_and_compress_dag(
    spec_source: str | Path,
    *,
    entrypoint: str,
    train_kwargs: dict[str, Any] | None = None,
    dag_id: str = "squeezeflow_retrain_and_compress",
    spec: Mapping[str, Any] | None = None,
    schedule: Any = "@weekly",
    tags: list[str] | None = None,
    mlflow_conn_id: str | None = DEFAULT_MLFLOW_CONN_ID,
    aws_conn_id: str | None = DEFAULT_AWS_CONN_ID,
    artifacts: str | None = None,
    workdir: str | None = None,
    retries: int = 2,
) -> DAG:
    """Scheduled retraining with the user's entry point, then the compression tasks on the new model.

    Every run reads the spec when it starts (`read_spec`, with the run form applied): the retrain trains
    on what the spec says then, not on a copy from when the DAG file was parsed. Parse time reads it only
    for the DAG's shape (search rounds, the job's baseline and champion assets, the run form); a spec that
    cannot be read then still makes the DAG, with a `SpecImportWarning`, and its runs fail in
    `read_spec` with the spec's message until it is fixed."""
    from squeezeflow.airflow.operators import SqueezeflowRetrainOperator

    doc: dict[str, Any] | None
    try:
        doc = _spec_doc(spec_source, spec)
    except Exception as err:  # a missing file, a bad spec, an unreachable S3: say so, keep the DAG
        warnings.warn(
            SpecImportWarning(
                f"{spec_source}: cannot read the job spec ({err}); runs will fail until it is fixed"
            ),
            stacklevel=2,
        )
        doc = None
    dag = _dag(doc, dag_id, schedule, ["retrain", *(tags or [])], retries, RETRAIN_DOC, spec_source)
    with dag:
        read = SqueezeflowResolveSpecOperator(
            task_id="read_spec", spec_source=str(spec_source), aws_conn_id=aws_conn_id
        )
        retrain = SqueezeflowRetrainOperator(
            task_id="retrain",
            spec=read.output,
            entrypoint=entrypoint,
            train_kwargs=train_kwargs,
            outlets=[baseline_asset(doc["name"])] if doc is not None else [],
            mlflow_conn_id=mlflow_conn_id,
            aws_conn_id=aws_conn_id,
            artifacts=artifacts,
            workdir=workdir,
        )
    add_compress_tasks(
        dag,
        str(spec_source),
        mlflow_conn_id=mlflow_conn_id,
        aws_conn_id=aws_conn_id,
        artifacts=artifacts,
        workdir=workdir,
        overrides={"model": {"uri": retrain.output}},
        upstream=retrain,
        rounds=_rounds(spec_source, doc) if doc is not None else 1,
        parallel_trials=_parallel_trials(spec_source, doc) if doc is not None else None,
        champion=champion_asset(doc["registry"]["model_name"], doc["registry"]["alias"])
        if doc is not None
        else None,
    )
    return dag


def dags_from_folder(folder: str | Path, **kwargs: Any) -> dict[str, DAG]:
    """One compression DAG per ``*.yaml``/``*.yml`` job spec in ``folder`` (not recursive).

    Returns them keyed by DAG id, for the caller to put in its module globals. A spec that does not
    validate (or two specs with the same job name) makes no DAG; a `SpecImportWarning` names the file
    and the problem, and the remaining DAGs are built as usual.
    """
    from squeezeflow import tasks

    out: dict[str, DAG] = {}
    for path in sorted([*Path(folder).glob("*.yaml"), *Path(folder).glob("*.yml")]):
        try:
            doc = tasks.resolve_spec(path)
        except InvalidInputError as err:
            warnings.warn(SpecImportWarning(f"{path.name}: no DAG made: {err}"), stacklevel=2)
            continue
        dag_id = dag_id_for(doc["name"])
        if dag_id in out:
            warnings.warn(
                SpecImportWarning(
                    f"{path.name}: no DAG made: job name {doc['name']!r} is used by another spec"
                ),
                stacklevel=2,
            )
            continue
        out[dag_id] = compress_dag(path, spec=doc, dag_id=dag_id, tags=["template"], **kwargs)
    return out
