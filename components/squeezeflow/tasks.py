"""The stages as orchestrator tasks: JSON in, JSON out.

Airflow operators, Kubeflow components and ``squeezeflow stage`` are thin wrappers over these functions.
Everything they pass between tasks is a small JSON document (a spec, a stage record, a recipe) that refers
to artifacts by URI and content hash, never the artifacts themselves, so it fits in an XCom or a KFP
parameter. The rules about a candidate are the search's (`squeezeflow.search.policy`), and the search's
state is in the artifact store (`squeezeflow.search.rounds`), so every door runs the same search.

The chain for one job::

    spec = resolve_spec(source, overrides)          # validated, defaults filled in, paths absolute
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
    BaselineResult,
    BenchmarkResult,
    CandidateOutcome,
    CandidateResult,
    GateResult,
    IngestResult,
)
from squeezeflow.spec.document import read_spec_file, read_spec_text
from squeezeflow.spec.job import JobSpec
from squeezeflow.spec.load import parse_spec, spec_folder
from squeezeflow.spec.search import Recipe
from squeezeflow.stages import Settings, StageContext

if TYPE_CHECKING:
    from squeezeflow.report import PublishedReport

log = logging.getLogger(__name__)

Doc = dict[str, Any]


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> Doc:
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
) -> Doc:
    """The spec overrides of one orchestrated run, later wins: the run form's values
    (`squeezeflow.run_form.form_overrides`; unset ones change nothing), then the model the run's
    triggering asset events announced (their ``model_uri`` extra, the last one given), then what the DAG
    itself wires in (a retrain's new model). Both Airflow paths, in-process and pod, call this."""
    from squeezeflow.run_form import form_overrides

    out = form_overrides(form or {})
    for uri in event_model_uris:
        if uri:
            out = merge_overrides(out, {"model": {"uri": uri}})
    return merge_overrides(out, wired or {})


def _read_spec_document(source: str | Path) -> tuple[Doc, Path | None, str]:
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


def resolve_spec(source: str | Path | Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Doc:
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
    job = parse_spec(doc, source=name, base_dir=base_dir)
    return job.model_dump(mode="json", by_alias=True)


def job_of(spec: Mapping[str, Any] | JobSpec) -> JobSpec:
    return spec if isinstance(spec, JobSpec) else parse_spec(dict(spec), source="<resolved spec>")


def open_context(spec: JobSpec, settings: Settings) -> StageContext:
    return StageContext.open(settings, spec.name)


def _dump(model: Any) -> Doc:
    return dict(model.model_dump(mode="json"))


def retrain_task(
    spec: Mapping[str, Any],
    settings: Settings,
    entrypoint: str,
    train_kwargs: Mapping[str, Any] | None = None,
) -> Doc:
    """Run the user's training entry point and put the new ``state_dict`` in the artifact store.

    ``entrypoint`` is ``module:callable``, called as ``fn(data_dir=..., output_path=..., base_model_uri=...,
    **train_kwargs)`` (see `squeezeflow.zoo.train.train_zoo_model`); it must write a ``state_dict`` that the
    spec's ``model.factory`` builds, which is checked (loaded with ``weights_only=True``) before anything
    uses it. Returns ``{"model": ArtifactRef, "model_uri", "previous_model_uri", "entrypoint", "kwargs",
    "seconds"}``.
    """
    from squeezeflow.data import fetch_dataset
    from squeezeflow.models.sources import import_callable, load_torch_model

    job = job_of(spec)
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
    return {
        "entrypoint": entrypoint,
        "kwargs": kwargs,
        "model": ref.model_dump(mode="json"),
        "model_uri": ref.uri,
        "previous_model_uri": job.model.uri,
        "seconds": round(time.time() - started, 3),
    }


def ingest_task(spec: Mapping[str, Any], settings: Settings) -> Doc:
    from squeezeflow.stages import ingest

    job = job_of(spec)
    return _dump(ingest(job, open_context(job, settings)))


def baseline_task(spec: Mapping[str, Any], settings: Settings, ingest: Mapping[str, Any]) -> Doc:
    from squeezeflow.stages import baseline

    job = job_of(spec)
    return _dump(baseline(job, IngestResult.model_validate(ingest), open_context(job, settings)))


def baseline_benchmark_task(
    spec: Mapping[str, Any],
    settings: Settings,
    ingest: Mapping[str, Any],
    baseline: Mapping[str, Any],
    defer_remote: bool = False,
) -> Doc:
    """The baseline measured on every device profile, keyed by profile name. With ``defer_remote``,
    remote profiles still being measured are listed under ``"_pending"`` (profile -> record key)."""
    from squeezeflow.search.policy import measure_on_profiles

    job = job_of(spec)
    ing = IngestResult.model_validate(ingest)
    base = BaselineResult.model_validate(baseline)
    done, pending = measure_on_profiles(
        job,
        open_context(job, settings),
        base.onnx,
        ing.dataset.input_shape,
        base.parent_run_id,
        base.model_id,
        defer_remote,
        ingest=ing,
    )
    docs = {name: _dump(b) for name, b in done.items()}
    return {**docs, "_pending": pending} if pending else docs


def plan_task(
    spec: Mapping[str, Any], settings: Settings, ingest: Mapping[str, Any], round_index: int = 0
) -> list[Doc]:
    """Ask: the recipes of search round ``round_index``, one per mapped task (an empty list when the
    search has stopped). Round 0 is the cheap candidates; later rounds ask the study, rebuilt from the
    trials recorded so far. Recorded, so a retried task gets the same recipes."""
    from squeezeflow.search.rounds import plan_round

    job = job_of(spec)
    ing = IngestResult.model_validate(ingest)
    plan = plan_round(job, ing, round_index, open_context(job, settings))
    return [r.model_dump(mode="json") for r in plan.recipes]


def optimize_task(
    spec: Mapping[str, Any],
    settings: Settings,
    ingest: Mapping[str, Any],
    baseline: Mapping[str, Any],
    recipe: Mapping[str, Any],
) -> Doc:
    """Build one candidate. Returns ``{"candidate": ...}``, the start of a candidate outcome."""
    from squeezeflow.search.policy import build

    job = job_of(spec)
    try:
        r = Recipe.model_validate(dict(recipe))
    except Exception as err:
        raise InvalidInputError(f"invalid recipe {dict(recipe)!r}: {err}") from None
    cand = build(
        job,
        IngestResult.model_validate(ingest),
        BaselineResult.model_validate(baseline),
        r,
        open_context(job, settings),
    )
    return {"candidate": _dump(cand)}


def gate_task(
    spec: Mapping[str, Any],
    settings: Settings,
    ingest: Mapping[str, Any],
    baseline: Mapping[str, Any],
    outcome: Mapping[str, Any],
    defer_remote: bool = False,
) -> Doc:
    """Latency first, then the accuracy gate, for one candidate. Adds ``"gate"`` to the outcome (and, for
    a candidate skipped as slower, its ``"benchmarks"``: the measurement that decided it).

    With ``defer_remote``, held-out evaluations that device agents still owe (profiles with
    ``evaluate_on_device``) are only requested: the result lists them under ``"_pending"`` (profile ->
    record key, stage ``"_pending_stage"``) and no verdict is given until they are recorded."""
    from squeezeflow.search.policy import judge, screen
    from squeezeflow.stages.device_eval import FAILURE_STAGE, RESULT_STAGE, submit_evaluation

    job = job_of(spec)
    cand = CandidateResult.model_validate(outcome["candidate"])
    ing = IngestResult.model_validate(ingest)
    base = BaselineResult.model_validate(baseline)
    ctx = open_context(job, settings)
    skipped = screen(job, ing, base, cand, ctx)
    if skipped is not None:
        return _dump(skipped)
    if defer_remote and cand.status == "ok" and cand.onnx is not None:
        pending = {}
        for p in job.devices:
            if p.evaluate_on_device:
                key = submit_evaluation(cand.onnx, job.data.uri, ing.dataset.sha256, p, ctx)
                if ctx.store.read_record(RESULT_STAGE, key) is None and (
                    ctx.store.read_record(FAILURE_STAGE, key) is None
                ):
                    pending[p.name] = key
        if pending:
            return {**dict(outcome), "_pending": pending, "_pending_stage": RESULT_STAGE}
    verdict = judge(job, ing, base, cand, ctx)
    return {**dict(outcome), "gate": _dump(verdict)}


def benchmark_task(
    spec: Mapping[str, Any],
    settings: Settings,
    ingest: Mapping[str, Any],
    baseline: Mapping[str, Any],
    outcome: Mapping[str, Any],
    defer_remote: bool = False,
) -> Doc:
    """Measure one candidate on every device profile when it passed the gate (one that did not cannot be
    promoted: device time would be spent on nothing), end its MLflow run and record the trial for the
    search. Returns the complete outcome; with ``defer_remote`` and remote profiles still being
    measured, returns ``{"_pending": {profile: record key}}`` instead (call again once they exist)."""
    from squeezeflow.search.policy import finish, measure

    job = job_of(spec)
    ctx = open_context(job, settings)
    ing = IngestResult.model_validate(ingest)
    cand = CandidateResult.model_validate(outcome["candidate"])
    verdict = GateResult.model_validate(outcome["gate"])
    if outcome.get("benchmarks"):  # skipped as slower: its measurement is what decided it
        benches = [BenchmarkResult.model_validate(b) for b in outcome["benchmarks"]]
    else:
        benches, pending = measure(job, ing, cand, verdict, ctx, defer_remote)
        if pending:
            return {"_pending": pending}
    done = CandidateOutcome(candidate=cand, gate=verdict, benchmarks=benches)
    return _dump(finish(job, ing, BaselineResult.model_validate(baseline), done, ctx))


def any_passed(outcomes: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any candidate passed the accuracy gate."""
    return any(bool(o.get("gate", {}).get("passed")) for o in outcomes)


def gate_verdict(outcomes: Sequence[Mapping[str, Any]]) -> str:
    """One line for a person: how many candidates passed the gate, and the closest miss."""
    from squeezeflow.report import gate_summary

    return gate_summary([GateResult.model_validate(o["gate"]) for o in outcomes if o.get("gate")])


def search_outcomes_task(spec: Mapping[str, Any], settings: Settings, ingest: Mapping[str, Any]) -> list[Doc]:
    """Every recorded trial's outcome, in plan order (whichever door ran them)."""
    from squeezeflow.search.rounds import search_outcomes

    job = job_of(spec)
    ing = IngestResult.model_validate(ingest)
    return [_dump(o) for o in search_outcomes(ing, open_context(job, settings))]


def promote_task(
    spec: Mapping[str, Any],
    settings: Settings,
    ingest: Mapping[str, Any],
    baseline: Mapping[str, Any],
    baseline_benchmarks: Mapping[str, Any],
    outcomes: Sequence[Mapping[str, Any]] | None = None,
    started: float | None = None,
) -> Doc:
    """Promote the best eligible candidate and return the job's result (the summary table's rows, the
    promotion, and links to the MLflow runs). ``outcomes`` default to every trial the search recorded."""
    return promote_and_report_task(
        spec, settings, ingest, baseline, baseline_benchmarks, outcomes, started=started
    )[0]


def promote_and_report_task(
    spec: Mapping[str, Any],
    settings: Settings,
    ingest: Mapping[str, Any],
    baseline: Mapping[str, Any],
    baseline_benchmarks: Mapping[str, Any],
    outcomes: Sequence[Mapping[str, Any]] | None = None,
    started: float | None = None,
) -> tuple[Doc, PublishedReport | None]:
    """`promote_task`, and the job report it published (its text: None when rendering it failed)."""
    from squeezeflow.runner import job_result_and_report
    from squeezeflow.search.rounds import search_outcomes
    from squeezeflow.stages import promote

    job = job_of(spec)
    ctx = open_context(job, settings)
    ing = IngestResult.model_validate(ingest)
    base = BaselineResult.model_validate(baseline)
    if job.target.name not in baseline_benchmarks:
        raise InvalidInputError(f"no baseline benchmark for the target profile {job.target.name!r}")
    target = BenchmarkResult.model_validate(baseline_benchmarks[job.target.name])
    outs = (
        search_outcomes(ing, ctx)
        if outcomes is None
        else [CandidateOutcome.model_validate(dict(o)) for o in outcomes]
    )
    promotion = promote(job, ing, base, target, outs, ctx)
    seconds = 0.0 if started is None else max(0.0, time.time() - started)
    base_benches = {
        name: BenchmarkResult.model_validate(doc)
        for name, doc in baseline_benchmarks.items()
        if not name.startswith("_")
    }
    result, report = job_result_and_report(
        job, settings, ctx, ing, base, target, outs, promotion, seconds, base_benches
    )
    return _dump(result), report
