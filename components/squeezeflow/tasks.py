"""The stages as orchestrator tasks: JSON in, JSON out.

Airflow operators and Kubeflow components are thin wrappers over these functions. Everything they pass
between tasks is a small JSON document (a spec, a stage record, a recipe) that refers to artifacts by
URI and content hash, never the artifacts themselves, so it fits in an XCom or a KFP parameter.

The chain for one job::

    spec = resolve_spec(source, overrides)          # validated, defaults filled in, paths absolute
    ing = ingest_task(spec, settings)
    base = baseline_task(spec, settings, ing)
    base_bench = baseline_benchmark_task(spec, settings, ing, base)
    for recipe in plan_task(spec):                  # fan out: one mapped task / ParallelFor iteration each
        c = optimize_task(spec, settings, ing, base, recipe)
        c = gate_task(spec, settings, ing, base, c)
        c = benchmark_task(spec, settings, ing, c)  # skipped work for candidates that failed the gate
    summary = promote_task(spec, settings, ing, base, base_bench, [c, ...])
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from squeezeflow.errors import InvalidInputError, SpecError
from squeezeflow.results import (
    BaselineResult,
    BenchmarkResult,
    CandidateOutcome,
    CandidateResult,
    GateResult,
    IngestResult,
)
from squeezeflow.spec import JobSpec, Recipe, parse_spec
from squeezeflow.spec_document import read_spec_file, read_spec_text
from squeezeflow.stages import Settings, StageContext

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


def _read_spec_document(source: str | Path) -> tuple[Doc, Path | None, str]:
    s = str(source)
    if s.startswith("s3://"):
        from squeezeflow.s3 import s3_call, s3_client
        from squeezeflow.store import parse_s3_uri

        bucket, key = parse_s3_uri(s)
        client = s3_client()
        body = s3_call(f"read of {s}", client.get_object, Bucket=bucket, Key=key)["Body"].read()
        data = read_spec_text(body, s)
        if not isinstance(data, dict):
            raise SpecError(f"invalid job spec {s}: the top level must be a mapping")
        return data, None, s
    path = Path(s)
    data = read_spec_file(path)
    parse_spec(data, source=s, base_dir=path.resolve().parent)  # the file alone must be a valid spec
    return data, path.resolve().parent, s


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
    from squeezeflow.models import import_callable, load_torch_model

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


def _measure(
    job: JobSpec,
    ctx: StageContext,
    ref: Any,
    shape: list[int],
    run_id: str | None,
    model_id: str | None,
    defer_remote: bool,
    ingest: IngestResult | None = None,
) -> tuple[dict[str, Doc], dict[str, str]]:
    """Measure on every profile: local ones now; remote ones, when ``defer_remote``, only requested (their
    record keys are returned as pending, for the caller to wait on without blocking). With ``ingest``,
    ``ref`` is the baseline and pytorch_eager profiles measure its original PyTorch file; without, it is
    a candidate and those profiles are left out (noted on ``run_id``)."""
    from squeezeflow.errors import DeviceUnavailableError
    from squeezeflow.stages import benchmark
    from squeezeflow.stages.benchmark import (
        RESULT_STAGE,
        agent_failure,
        candidate_profiles,
        note_reference_skip,
        submit_remote,
    )

    done: dict[str, Doc] = {}
    pending: dict[str, str] = {}
    if ingest is None:
        profiles = candidate_profiles(job.devices)
        note_reference_skip(ctx, job.devices, run_id)
    else:
        profiles = list(job.devices)
    for p in profiles:
        model, source = (
            (ingest.model_source, job.model) if ingest and p.runtime == "pytorch_eager" else (ref, None)
        )
        if p.remote and defer_remote:
            key = submit_remote(model, shape, p, ctx, job.name, run_id, model_id, source)
            recorded = ctx.store.read_record(RESULT_STAGE, key)
            failure = agent_failure(ctx, key) if recorded is None else None
            if failure is not None:
                raise DeviceUnavailableError(f"the device agent for profile {p.name!r} reported: {failure}")
            if recorded is None:
                pending[p.name] = key
            else:
                done[p.name] = _dump(
                    BenchmarkResult.model_validate(recorded).model_copy(update={"budgets": p.budgets})
                )
        else:
            done[p.name] = _dump(
                benchmark(model, shape, p, ctx, run_id=run_id, model_id=model_id, torch_source=source)
            )
    return done, pending


def baseline_benchmark_task(
    spec: Mapping[str, Any],
    settings: Settings,
    ingest: Mapping[str, Any],
    baseline: Mapping[str, Any],
    defer_remote: bool = False,
) -> Doc:
    """The baseline measured on every device profile, keyed by profile name. With ``defer_remote``,
    remote profiles still being measured are listed under ``"_pending"`` (profile -> record key)."""
    job = job_of(spec)
    ing = IngestResult.model_validate(ingest)
    base = BaselineResult.model_validate(baseline)
    done, pending = _measure(
        job,
        open_context(job, settings),
        base.onnx,
        ing.dataset.input_shape,
        base.parent_run_id,
        base.model_id,
        defer_remote,
        ingest=ing,
    )
    return {**done, "_pending": pending} if pending else done


def plan_task(spec: Mapping[str, Any], ingest: Mapping[str, Any] | None = None) -> list[Doc]:
    """The recipes to fan out over, one per mapped task. Orchestrators run the planned list; the adaptive
    Optuna search (``squeezeflow run``) needs one process that sees every result as it arrives.
    ``ingest`` (the ingest record) says whether the inputs are token ids, which get the text defaults."""
    from squeezeflow.recipes import plan_recipes

    dtype = IngestResult.model_validate(ingest).dataset.input_dtype if ingest else "float32"
    return [r.model_dump(mode="json") for r in plan_recipes(job_of(spec), dtype)]


def optimize_task(
    spec: Mapping[str, Any],
    settings: Settings,
    ingest: Mapping[str, Any],
    baseline: Mapping[str, Any],
    recipe: Mapping[str, Any],
) -> Doc:
    """Build one candidate. Returns ``{"candidate": ...}``, the start of a candidate outcome."""
    from squeezeflow.stages import optimize

    job = job_of(spec)
    try:
        r = Recipe.model_validate(dict(recipe))
    except Exception as err:
        raise InvalidInputError(f"invalid recipe {dict(recipe)!r}: {err}") from None
    cand = optimize(
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
    """Score one candidate against the accuracy gate. Adds ``"gate"`` to the outcome.

    With ``defer_remote``, held-out evaluations that device agents still owe (profiles with
    ``evaluate_on_device``) are only requested: the result lists them under ``"_pending"`` (profile ->
    record key, stage ``"_pending_stage"``) and no verdict is given until they are recorded."""
    from squeezeflow.stages import gate
    from squeezeflow.stages.device_eval import FAILURE_STAGE, RESULT_STAGE, submit_evaluation

    job = job_of(spec)
    cand = CandidateResult.model_validate(outcome["candidate"])
    ing = IngestResult.model_validate(ingest)
    ctx = open_context(job, settings)
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
    verdict = gate(job, ing, BaselineResult.model_validate(baseline), cand, ctx)
    return {**dict(outcome), "gate": _dump(verdict)}


def benchmark_task(
    spec: Mapping[str, Any],
    settings: Settings,
    ingest: Mapping[str, Any],
    outcome: Mapping[str, Any],
    defer_remote: bool = False,
) -> Doc:
    """Measure one candidate on every device profile, only when it passed the gate (a candidate that
    failed cannot be promoted, so timing it would spend device time on nothing). Finishes the
    candidate's MLflow run. Returns the complete outcome; with ``defer_remote`` and remote profiles still
    being measured, returns ``{"_pending": {profile: record key}}`` instead (call again once they exist)."""
    job = job_of(spec)
    ctx = open_context(job, settings)
    cand = CandidateResult.model_validate(outcome["candidate"])
    verdict = GateResult.model_validate(outcome["gate"])
    benches: list[BenchmarkResult] = []
    if verdict.passed and cand.status == "ok" and cand.onnx is not None:
        shape = IngestResult.model_validate(ingest).dataset.input_shape
        done, pending = _measure(job, ctx, cand.onnx, shape, cand.run_id, cand.model_id, defer_remote)
        if pending:
            return {"_pending": pending}
        benches = [BenchmarkResult.model_validate(done[p.name]) for p in job.devices if p.name in done]
    ctx.tracker.finish(cand.run_id)
    return _dump(CandidateOutcome(candidate=cand, gate=verdict, benchmarks=benches))


def any_passed(outcomes: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any candidate passed the accuracy gate (what short-circuits promotion)."""
    return any(bool(o.get("gate", {}).get("passed")) for o in outcomes)


def gate_verdict(outcomes: Sequence[Mapping[str, Any]]) -> str:
    """One line for a person: how many candidates passed the gate, and the closest miss."""
    gates = [GateResult.model_validate(o["gate"]) for o in outcomes if o.get("gate")]
    passed = [g for g in gates if g.passed]
    if passed:
        return f"{len(passed)} of {len(gates)} candidates passed the accuracy gate"
    if not gates:
        return "no candidate reached the accuracy gate"
    reasons = "; ".join(sorted({g.reason for g in gates})[:3])
    return f"none of {len(gates)} candidates passed the accuracy gate: {reasons}"


def promote_task(
    spec: Mapping[str, Any],
    settings: Settings,
    ingest: Mapping[str, Any],
    baseline: Mapping[str, Any],
    baseline_benchmarks: Mapping[str, Any],
    outcomes: Sequence[Mapping[str, Any]],
    started: float | None = None,
) -> Doc:
    """Promote the best eligible candidate and return the job's result (the summary table's rows, the
    promotion, and links to the MLflow runs)."""
    from squeezeflow.pipeline import job_result
    from squeezeflow.stages import promote

    job = job_of(spec)
    ctx = open_context(job, settings)
    ing = IngestResult.model_validate(ingest)
    base = BaselineResult.model_validate(baseline)
    if job.target.name not in baseline_benchmarks:
        raise InvalidInputError(f"no baseline benchmark for the target profile {job.target.name!r}")
    target = BenchmarkResult.model_validate(baseline_benchmarks[job.target.name])
    outs = [CandidateOutcome.model_validate(dict(o)) for o in outcomes]
    promotion = promote(job, ing, base, target, outs, ctx)
    seconds = 0.0 if started is None else max(0.0, time.time() - started)
    base_benches = {
        name: BenchmarkResult.model_validate(doc)
        for name, doc in baseline_benchmarks.items()
        if not name.startswith("_")
    }
    result = job_result(job, settings, ctx, ing, base, target, outs, promotion, seconds, base_benches)
    return _dump(result)
