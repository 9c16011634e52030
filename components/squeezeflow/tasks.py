"""The stages as orchestrator tasks: typed records in, typed records out.

Airflow operators, Kubeflow components and ``squeezeflow stage`` are thin wrappers over these functions.
Everything they pass between tasks is a small record (a spec, a stage result in `squeezeflow.results`, a
recipe) that refers to artifacts by URI and content hash, never the artifacts themselves, so its JSON fits
in an XCom or a KFP parameter; each adapter converts to and from that JSON at its own edge
(``model_dump(mode="json")`` / ``model_validate``). A task that may wait for device agents
(``defer_remote``) returns `Pending` instead of its result while they still owe records. The rules about
a candidate are the search's (`squeezeflow.search.policy`), and the search's state is in the artifact
store (`squeezeflow.search.rounds`), so every door runs the same search.

The chain for one job::

    spec = resolve_job(source, overrides)           # validated, defaults filled in, paths absolute
    ing = ingest_task(spec, settings)
    base = baseline_task(spec, settings, ing)
    base_bench = baseline_benchmark_task(spec, settings, ing, base)
    for k in range(rounds_of(spec)):                # unrolled when a DAG or pipeline is built
        for recipe in plan_task(spec, settings, ing, k):   # fan out: mapped tasks / ParallelFor
            c = optimize_task(spec, settings, ing, base, recipe)    # build
            c = gate_task(spec, settings, ing, base, c)             # latency first, then the gate
            c = benchmark_task(spec, settings, ing, base, c)        # every profile if it passed; tell
    summary = promote_task(spec, settings, ing, base, base_bench)   # every recorded trial
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow.errors import InvalidInputError, SpecError
from squeezeflow.results import (
    BaselineBenchmarks,
    BaselineResult,
    CandidateOutcome,
    GateResult,
    IngestResult,
    JobResult,
    Pending,
    RetrainResult,
    Trial,
)
from squeezeflow.spec.document import read_spec_file, read_spec_text
from squeezeflow.spec.job import JobSpec
from squeezeflow.spec.load import parse_spec, spec_folder
from squeezeflow.spec.search import Recipe
from squeezeflow.stages import Settings, StageContext

if TYPE_CHECKING:
    from squeezeflow.report import PublishedReport

log = logging.getLogger(__name__)


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base``; a ``None`` override leaves the value alone and
    lists are replaced whole."""
    out = dict(copy.deepcopy(base))
    for k, v in overrides.items():
        if v is None:
            continue
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = merge_overrides(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def run_overrides(
    form: Mapping[str, Any] | None,
    event_model_uris: Sequence[str | None] = (),
    wired: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The spec overrides of one orchestrated run, later wins: the run form's values
    (`squeezeflow.spec.run_form.form_overrides`; unset ones change nothing), then the model the run's
    triggering asset events announced (their ``model_uri`` extra, the last one given), then what the DAG
    itself wires in (a retrain's new model). Both Airflow paths, in-process and pod, call this."""
    from squeezeflow.spec.run_form import form_overrides

    out = form_overrides(form or {})
    for uri in event_model_uris:
        if uri:
            out = merge_overrides(out, {"model": {"uri": uri}})
    return merge_overrides(out, wired or {})


def _read_spec_document(source: str | Path) -> tuple[dict[str, Any], Path | None, str]:
    s = str(source)
    if s.startswith("s3://"):
        from squeezeflow.store.s3 import parse_s3_uri, s3_call, s3_client

        bucket, key = parse_s3_uri(s)
        client = s3_client()
        body = s3_call(f"read of {s}", client.get_object, Bucket=bucket, Key=key)["Body"].read()
        data = read_spec_text(body, s)
        if not isinstance(data, dict):
            raise SpecError(f"invalid job spec {s}: the top level must be a mapping")
        return data, None, s
    path = Path(s)
    data = read_spec_file(path)
    parse_spec(data, source=s, base_dir=spec_folder(path))  # the file alone must be a valid spec
    return data, spec_folder(path), s


def resolve_job(
    source: str | Path | Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> JobSpec:
    """A job spec ready to pass between tasks: validated, defaults filled in, local paths absolute.

    ``source`` is a spec file, an ``s3://`` URI of one, or an already-parsed document (relative paths
    then resolve against the working directory). ``overrides`` is deep-merged first (what a UI form or a
    DAG run's params change), so an invalid override is reported against the spec field it names.
    """
    base_dir: Path | None
    if isinstance(source, Mapping):
        doc, base_dir, name = dict(source), Path.cwd(), "<spec>"
    else:
        doc, base_dir, name = _read_spec_document(source)
    if overrides:
        doc = merge_overrides(doc, overrides)
        name = f"{name} (with overrides {sorted(k for k, v in overrides.items() if v is not None)})"
    return parse_spec(doc, source=name, base_dir=base_dir)


def resolve_spec(
    source: str | Path | Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`resolve_job` as the JSON document the adapters pass between tasks (an XCom, a KFP handle);
    `job_of` reads it back."""
    return spec_json(resolve_job(source, overrides))


def spec_json(job: JobSpec) -> dict[str, Any]:
    """A job spec as the JSON document adapters pass between tasks."""
    return job.model_dump(mode="json", by_alias=True)


def job_of(spec: Mapping[str, Any] | JobSpec) -> JobSpec:
    """The job spec from its JSON document (what `resolve_spec` returned)."""
    return spec if isinstance(spec, JobSpec) else parse_spec(dict(spec), source="<resolved spec>")


def open_context(spec: JobSpec, settings: Settings) -> StageContext:
    return StageContext.open(settings, spec.name)


def retrain_task(
    job: JobSpec,
    settings: Settings,
    entrypoint: str,
    train_kwargs: Mapping[str, Any] | None = None,
) -> RetrainResult:
    """Run the user's training entry point and put the new ``state_dict`` in the artifact store.

    ``entrypoint`` is ``module:callable``, called as ``fn(data_dir=..., output_path=..., base_model_uri=...,
    **train_kwargs)`` (see `squeezeflow.zoo.train.train_zoo_model`); it must write a ``state_dict`` that the
    spec's ``model.factory`` builds, which is checked (loaded with ``weights_only=True``) before anything
    uses it.
    """
    from squeezeflow.data import fetch_dataset
    from squeezeflow.models.sources import import_callable, load_torch_model

    if job.model.format != "state_dict":
        raise SpecError(f"retraining writes a state_dict; the spec's model.format is {job.model.format!r}")
    kwargs = dict(train_kwargs or {})
    ctx = open_context(job, settings)
    data_dir = fetch_dataset(job.data.uri, ctx.cache)
    out = ctx.scratch("retrain") / f"{job.name}-{time.time_ns()}.pt"
    fn = import_callable(entrypoint, "training entry point")
    started = time.time()
    fn(data_dir=str(data_dir), output_path=str(out), base_model_uri=job.model.uri, **kwargs)
    if not out.is_file():
        raise InvalidInputError(f"training entry point {entrypoint} did not write {out}")
    load_torch_model(job.model, out)
    ref = ctx.store.put_file(out, suffix=".pt")
    log.info("retrained %s with %s: %s", job.name, entrypoint, ref.uri)
    return RetrainResult(
        entrypoint=entrypoint,
        kwargs=kwargs,
        model=ref,
        model_uri=ref.uri,
        previous_model_uri=job.model.uri,
        seconds=round(time.time() - started, 3),
    )


def ingest_task(job: JobSpec, settings: Settings) -> IngestResult:
    from squeezeflow.stages import ingest

    return ingest(job, open_context(job, settings))


def baseline_task(job: JobSpec, settings: Settings, ingest: IngestResult) -> BaselineResult:
    from squeezeflow.stages import baseline

    return baseline(job, ingest, open_context(job, settings))


def baseline_benchmark_task(
    job: JobSpec,
    settings: Settings,
    ingest: IngestResult,
    baseline: BaselineResult,
    defer_remote: bool = False,
) -> BaselineBenchmarks | Pending:
    """The baseline measured on every device profile, keyed by profile name. With ``defer_remote``,
    while remote profiles are still being measured: `Pending` on their benchmark records."""
    from squeezeflow.search.policy import measure_on_profiles
    from squeezeflow.stages.benchmark import RESULT_STAGE

    done, pending = measure_on_profiles(
        job,
        open_context(job, settings),
        baseline.onnx,
        ingest.dataset.input_shape,
        baseline.parent_run_id,
        baseline.model_id,
        defer_remote,
        ingest=ingest,
    )
    return Pending(stage=RESULT_STAGE, keys=pending) if pending else done


def plan_task(job: JobSpec, settings: Settings, ingest: IngestResult, round_index: int = 0) -> list[Recipe]:
    """Ask: the recipes of search round ``round_index``, one per mapped task (an empty list when the
    search has stopped). Round 0 is the cheap candidates; later rounds ask the study, rebuilt from the
    trials recorded so far. Recorded, so a retried task gets the same recipes."""
    from squeezeflow.search.rounds import plan_round

    return list(plan_round(job, ingest, round_index, open_context(job, settings)).recipes)


def parse_recipe(doc: Mapping[str, Any]) -> Recipe:
    """A recipe from its JSON; a malformed one is an input error naming it."""
    try:
        return Recipe.model_validate(dict(doc))
    except Exception as err:
        raise InvalidInputError(f"invalid recipe {dict(doc)!r}: {err}") from None


def optimize_task(
    job: JobSpec,
    settings: Settings,
    ingest: IngestResult,
    baseline: BaselineResult,
    recipe: Recipe,
) -> Trial:
    """Build one candidate: the start of its trial."""
    from squeezeflow.search.policy import build

    return Trial(candidate=build(job, ingest, baseline, recipe, open_context(job, settings)))


def gate_task(
    job: JobSpec,
    settings: Settings,
    ingest: IngestResult,
    baseline: BaselineResult,
    trial: Trial,
    defer_remote: bool = False,
) -> Trial | Pending:
    """Latency first, then the accuracy gate, for one candidate: the trial with its ``gate`` (and, for a
    candidate skipped as slower, its ``benchmarks``: the measurement that decided it).

    With ``defer_remote``, held-out evaluations that device agents still owe (profiles with
    ``evaluate_on_device``) are only requested: while any is missing the result is `Pending` on their
    evaluation records, and no verdict is given until they are recorded."""
    from squeezeflow.search.policy import judge, screen
    from squeezeflow.stages.device_eval import FAILURE_STAGE, RESULT_STAGE, submit_evaluation

    cand = trial.candidate
    ctx = open_context(job, settings)
    skipped = screen(job, ingest, baseline, cand, ctx)
    if skipped is not None:
        return Trial.of(skipped)
    if defer_remote and cand.status == "ok" and cand.onnx is not None:
        pending = {}
        for p in job.devices:
            if p.evaluate_on_device:
                key = submit_evaluation(
                    cand.onnx, ingest.dataset.engine_uri, ingest.dataset.engine_sha256, p, ctx
                )
                if ctx.store.read_record(RESULT_STAGE, key) is None and (
                    ctx.store.read_record(FAILURE_STAGE, key) is None
                ):
                    pending[p.name] = key
        if pending:
            return Pending(stage=RESULT_STAGE, keys=pending)
    verdict = judge(job, ingest, baseline, cand, ctx)
    return trial.model_copy(update={"gate": verdict})


def benchmark_task(
    job: JobSpec,
    settings: Settings,
    ingest: IngestResult,
    baseline: BaselineResult,
    trial: Trial,
    defer_remote: bool = False,
) -> CandidateOutcome | Pending:
    """Measure one candidate on every device profile when it passed the gate (one that did not cannot be
    promoted: device time would be spent on nothing), end its MLflow run and record the trial for the
    search. Returns the complete outcome; with ``defer_remote`` and remote profiles still being
    measured, `Pending` on their benchmark records instead (call again once they exist)."""
    from squeezeflow.search.policy import finish, measure
    from squeezeflow.stages.benchmark import RESULT_STAGE

    if trial.gate is None:
        raise InvalidInputError("the trial has no gate verdict: run the gate first")
    ctx = open_context(job, settings)
    if trial.benchmarks:  # skipped as slower: its measurement is what decided it
        benches = list(trial.benchmarks)
    else:
        benches, pending = measure(
            job, ingest, trial.candidate, trial.gate, ctx, defer_remote, baseline=baseline
        )
        if pending:
            return Pending(stage=RESULT_STAGE, keys=pending)
    done = CandidateOutcome(candidate=trial.candidate, gate=trial.gate, benchmarks=benches)
    return finish(job, ingest, baseline, done, ctx)


def any_passed(outcomes: Sequence[Trial | CandidateOutcome]) -> bool:
    """Whether any candidate passed the accuracy gate."""
    return any(o.gate is not None and o.gate.passed for o in outcomes)


def gate_verdict(outcomes: Sequence[Trial | CandidateOutcome]) -> str:
    """One line for a person: how many candidates passed the gate, and the closest miss."""
    from squeezeflow.report import gate_summary

    gates: list[GateResult] = [o.gate for o in outcomes if o.gate is not None]
    return gate_summary(gates)


def search_outcomes_task(job: JobSpec, settings: Settings, ingest: IngestResult) -> list[CandidateOutcome]:
    """Every recorded trial's outcome, in plan order (whichever door ran them)."""
    from squeezeflow.search.rounds import search_outcomes

    return list(search_outcomes(ingest, open_context(job, settings)))


def promote_task(
    job: JobSpec,
    settings: Settings,
    ingest: IngestResult,
    baseline: BaselineResult,
    baseline_benchmarks: BaselineBenchmarks,
    outcomes: Sequence[CandidateOutcome] | None = None,
    started: float | None = None,
) -> JobResult:
    """Promote the best eligible candidate and return the job's result (the summary table's rows, the
    promotion, and links to the MLflow runs). ``outcomes`` default to every trial the search recorded."""
    return promote_and_report_task(
        job, settings, ingest, baseline, baseline_benchmarks, outcomes, started=started
    )[0]


def promote_and_report_task(
    job: JobSpec,
    settings: Settings,
    ingest: IngestResult,
    baseline: BaselineResult,
    baseline_benchmarks: BaselineBenchmarks,
    outcomes: Sequence[CandidateOutcome] | None = None,
    started: float | None = None,
) -> tuple[JobResult, PublishedReport | None]:
    """`promote_task`, and the job report it published (its text: None when rendering it failed)."""
    from squeezeflow.runner import job_result_and_report
    from squeezeflow.search.rounds import search_outcomes
    from squeezeflow.stages import promote

    ctx = open_context(job, settings)
    if job.target.name not in baseline_benchmarks:
        raise InvalidInputError(f"no baseline benchmark for the target profile {job.target.name!r}")
    target = baseline_benchmarks[job.target.name]
    outs = search_outcomes(ingest, ctx) if outcomes is None else list(outcomes)
    promotion = promote(job, ingest, baseline, target, outs, ctx)
    seconds = 0.0 if started is None else max(0.0, time.time() - started)
    return job_result_and_report(
        job, settings, ctx, ingest, baseline, target, outs, promotion, seconds, dict(baseline_benchmarks)
    )
