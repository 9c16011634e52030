"""What each Kubeflow component does, between its KFP artifacts and :mod:`squeezeflow.tasks`.

The components in :mod:`squeezeflow.kfp.components` are one call into this module, so the code that
runs in a pod is plain, type-checked Python. Nothing here re-implements a stage: every step reads its
inputs, calls the task function, and writes what KFP shows.

**Handles.** An artifact this package writes (``Dataset``, ``Model``) is a small JSON file, a *handle*:
the stage record, which points at the bytes in the artifact store (``SQUEEZEFLOW_ARTIFACTS``, a
directory or ``s3://``) by URI and SHA-256. The dataset handle also carries the resolved job spec, so
every later step takes the dataset artifact and knows the job. The artifact's ``metadata`` repeats the
store URI, the hash and the headline numbers for the UI. Nothing large is copied into the pipeline root.

Deployment settings (MLflow URI, artifact store, S3 credentials and endpoint) come from the pod's
environment through :meth:`Settings.resolve`; in a cluster the pipeline maps them from a Kubernetes
secret (see :mod:`squeezeflow.kfp.pipelines`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow import tasks
from squeezeflow.errors import InvalidInputError, SpecError
from squeezeflow.results import (
    BaselineResult,
    BenchmarkResult,
    CandidateOutcome,
    CandidateResult,
    IngestResult,
    JobResult,
    Pending,
    Trial,
    dump_baseline_benchmarks,
    parse_baseline_benchmarks,
)
from squeezeflow.spec.document import read_spec_text
from squeezeflow.spec.job import JobSpec
from squeezeflow.spec.run_form import form_overrides, missing_without_spec
from squeezeflow.stages import Settings
from squeezeflow.store.artifacts import ArtifactRef

if TYPE_CHECKING:
    from squeezeflow.report import PublishedReport

log = logging.getLogger(__name__)

HANDLE_FORMAT = "squeezeflow.kfp-handle/v1"


# -- handles ------------------------------------------------------------------------------------------


def write_handle(
    artifact: Any,
    stage: str,
    record: Mapping[str, Any],
    spec: Mapping[str, Any] | None = None,
    started: float | None = None,
) -> None:
    doc: dict[str, Any] = {"format": HANDLE_FORMAT, "stage": stage, "record": dict(record)}
    if spec is not None:
        doc["spec"] = dict(spec)
    if started is not None:
        doc["started"] = started
    path = Path(artifact.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))


def read_handle(artifact: Any, stage: str) -> dict[str, Any]:
    try:
        doc = json.loads(Path(artifact.path).read_text())
    except (OSError, ValueError) as err:
        raise InvalidInputError(f"{artifact.path} is not a squeezeflow {stage} artifact: {err}") from None
    if not isinstance(doc, dict) or doc.get("format") != HANDLE_FORMAT or doc.get("stage") != stage:
        raise InvalidInputError(f"{artifact.path} is not a squeezeflow {stage} artifact")
    return doc


def job_of_dataset(dataset: Any) -> tuple[JobSpec, IngestResult]:
    """The resolved job spec and the ingest record, from the dataset artifact."""
    doc = read_handle(dataset, "ingest")
    return tasks.job_of(doc["spec"]), IngestResult.model_validate(doc["record"])


def baseline_of(baseline_model: Any) -> BaselineResult:
    """The baseline record, from the baseline model artifact."""
    return BaselineResult.model_validate(read_handle(baseline_model, "baseline")["record"])


def _finished(result: Any) -> Any:
    """A KFP step never defers: its tasks wait for device agents themselves (``defer_remote`` off)."""
    if isinstance(result, Pending):  # pragma: no cover - only a task called with defer_remote returns it
        raise AssertionError(f"a KFP step got {result!r}; its tasks must wait for device agents")
    return result


def _ref_metadata(artifact: Any, ref: ArtifactRef | None, **extra: Any) -> None:
    if ref is not None:
        artifact.metadata["store_uri"] = ref.uri
        artifact.metadata["sha256"] = ref.sha256
        artifact.metadata["size_bytes"] = int(ref.size)
    for k, v in extra.items():
        if v is not None:
            artifact.metadata[k] = v


def _log_metrics(metrics: Any, values: Mapping[str, float | int | None]) -> None:
    for k, v in values.items():
        if v is not None:
            metrics.log_metric(k, float(v))


# -- the job spec from the run form --------------------------------------------------------------------


def resolve_spec_param(spec: str, form: Mapping[str, Any]) -> dict[str, Any]:
    """The ``spec`` pipeline parameter (JSON or YAML text, an ``s3://`` URI of a spec file, or empty)
    with the run form's values (`squeezeflow.spec.run_form`) applied, validated. With ``spec`` empty the form
    alone makes the job, and must fill in the fields a job needs."""
    overrides = form_overrides(form)
    text = spec.strip()
    if not text:
        missing = missing_without_spec(form)
        if missing:
            raise SpecError(
                "the `spec` parameter is empty, so the run form makes the job; fill in "
                + ", ".join(f"`{m}`" for m in missing)
                + " (or paste a job spec, JSON or YAML, or an s3:// URI of one, into `spec`)"
            )
        return tasks.resolve_spec({}, overrides)
    if text.startswith("s3://"):
        return tasks.resolve_spec(text, overrides)
    doc = read_spec_text(text, "(the `spec` parameter)")
    if not isinstance(doc, dict):
        raise SpecError("the `spec` parameter must be a mapping (a job spec), or an s3:// URI of one")
    return tasks.resolve_spec(doc, overrides)


# -- steps --------------------------------------------------------------------------------------------


def retrain(spec: str, form: Mapping[str, Any], entrypoint: str, train_kwargs: str, model: Any) -> str:
    """Run the user's training entry point and put the new ``state_dict`` in the artifact store.

    ``entrypoint`` is ``module:callable``, called as ``fn(data_dir=..., output_path=..., base_model_uri=...,
    **train_kwargs)``; it must write a ``state_dict`` (``torch.save(model.state_dict(), output_path)``)
    that the spec's ``model.factory`` builds. Returns the new model's store URI, or the ``model_uri``
    form value unchanged when ``entrypoint`` is empty (the step is skipped).
    """
    unchanged = str(form.get("model_uri") or "")
    if not entrypoint.strip():
        log.info("no training entry point: compressing the model as it is")
        write_handle(model, "retrain", {"skipped": True, "model_uri": unchanged})
        return unchanged
    try:
        kwargs = json.loads(train_kwargs or "{}")
    except ValueError as err:
        raise InvalidInputError(f"train_kwargs is not JSON: {err}") from None
    if not isinstance(kwargs, dict):
        raise InvalidInputError("train_kwargs must be a JSON object")
    doc = resolve_spec_param(spec, form)
    record = tasks.retrain_task(tasks.job_of(doc), Settings.resolve(), entrypoint, kwargs)
    write_handle(model, "retrain", record.model_dump(mode="json"))
    _ref_metadata(model, record.model, format="state_dict", factory=doc["model"].get("factory"))
    return record.model_uri


def ingest(spec: str, form: Mapping[str, Any], dataset: Any) -> str:
    """Resolve the spec with the run form's values, validate the data and fingerprint the model. Returns
    the ingest record as JSON (the dataset and model fingerprints, the validation verdict, the job's
    MLflow run); the dataset handle also keeps the resolved spec and the job's start time."""
    started = time.time()
    resolved = resolve_spec_param(spec, form)
    result = tasks.ingest_task(tasks.job_of(resolved), Settings.resolve())
    record = result.model_dump(mode="json")
    write_handle(dataset, "ingest", record, spec=resolved, started=started)
    info = result.dataset
    _ref_metadata(
        dataset,
        None,
        store_uri=info.uri,
        sha256=info.sha256,
        name=info.name,
        num_classes=info.num_classes,
        split_sizes=json.dumps(info.split_sizes),
        validation_passed=bool(result.validation.success),
        job=resolved["name"],
        model_source=result.model_source.uri,
    )
    return json.dumps(record, sort_keys=True)


def baseline(dataset: Any, model: Any, metrics: Any) -> None:
    spec, ing = job_of_dataset(dataset)
    record = tasks.baseline_task(spec, Settings.resolve(), ing)
    write_handle(model, "baseline", record.model_dump(mode="json"))
    _ref_metadata(model, record.onnx, format="onnx", metric_name=record.metric_name, role="baseline")
    m = record.measure
    _log_metrics(
        metrics,
        {
            record.metric_name: record.metric,
            f"val_{record.metric_name}": record.val_metric,
            "size_bytes": m.size_bytes,
            "params": m.params,
            "macs": m.macs,
        },
    )


def _bench_metrics(metrics: Any, benches: Sequence[BenchmarkResult]) -> None:
    for b in benches:
        p = b.profile
        _log_metrics(
            metrics,
            {
                f"{p}.p50_ms": b.p50_ms,
                f"{p}.p95_ms": b.p95_ms,
                f"{p}.p99_ms": b.p99_ms,
                f"{p}.throughput_per_s": b.throughput_per_s,
                f"{p}.cv_p50": b.cv_p50,
                f"{p}.peak_rss_increase_mb": b.peak_rss_increase_mb,
                f"{p}.energy_mj_est": b.energy_mj_est,
            },
        )


def baseline_benchmark(dataset: Any, baseline_model: Any, metrics: Any) -> str:
    """The baseline on every device profile; returns ``{profile: benchmark record}`` as JSON."""
    spec, ing = job_of_dataset(dataset)
    out = _finished(tasks.baseline_benchmark_task(spec, Settings.resolve(), ing, baseline_of(baseline_model)))
    _bench_metrics(metrics, list(out.values()))
    return json.dumps(dump_baseline_benchmarks(out))


#: What a round that plans nothing iterates over: ``dsl.ParallelFor`` needs one item (kfp.local does not
#: collect from a loop of none), and every step of the loop passes it through at once.
NO_TRIAL = "_no_trial"


def _no_trial(doc: Any) -> bool:
    return isinstance(doc, Mapping) and NO_TRIAL in doc


def plan(dataset: Any, round_index: int = 0) -> list[str]:
    """Ask: the recipes of search round ``round_index``, one ParallelFor iteration each, as JSON strings
    (one placeholder when the search has stopped)."""
    spec, ing = job_of_dataset(dataset)
    recipes = tasks.plan_task(spec, Settings.resolve(), ing, round_index)
    if not recipes:
        return [json.dumps({NO_TRIAL: f"round {round_index}: the search has stopped"})]
    return [json.dumps(r.model_dump(mode="json"), sort_keys=True) for r in recipes]


def optimize(dataset: Any, baseline_model: Any, recipe: str, candidate: Any) -> str:
    spec, ing = job_of_dataset(dataset)
    base = baseline_of(baseline_model)
    try:
        r = json.loads(recipe)
    except ValueError as err:
        raise InvalidInputError(f"recipe is not JSON: {err}") from None
    if _no_trial(r):
        write_handle(candidate, "optimize", r)
        return json.dumps(r)
    outcome = tasks.optimize_task(spec, Settings.resolve(), ing, base, tasks.parse_recipe(r))
    cand = outcome.candidate
    write_handle(candidate, "optimize", cand.model_dump(mode="json"))
    _ref_metadata(
        candidate,
        cand.onnx,
        format="onnx",
        recipe=cand.recipe_key[:12],
        label=_label(cand),
        status=cand.status,
        error=cand.error,
    )
    return json.dumps(outcome.model_dump(mode="json"))


def _label(cand: CandidateResult) -> str:
    r = cand.recipe
    return str(r.name or "+".join(s.name for s in r.steps))


def _confusion(settings: Settings, evidence: ArtifactRef | None, out: Any) -> None:
    """The candidate's confusion matrix on the held-out split, for the KFP UI, as the gate recorded it in
    its ``evidence`` (display only: the gate's decision is the paired test in the gate stage)."""
    from squeezeflow.store.artifacts import open_store

    if evidence is None:
        raise InvalidInputError("the gate recorded no evidence")
    kept = json.loads(open_store(settings.artifacts).read_bytes(evidence, settings.workdir / "cache"))
    confusion = kept.get("confusion_matrix")
    if not confusion:
        raise InvalidInputError(
            "the gate's evidence has no confusion matrix (too many classes, or an older gate)"
        )
    out.log_confusion_matrix(confusion["classes"], confusion["matrix"])


def gate(dataset: Any, baseline_model: Any, outcome: str, metrics: Any, confusion: Any) -> str:
    spec, ing = job_of_dataset(dataset)
    base = baseline_of(baseline_model)
    settings = Settings.resolve()
    if _no_trial(json.loads(outcome)):
        return outcome
    gated: Trial = _finished(tasks.gate_task(spec, settings, ing, base, Trial.model_validate_json(outcome)))
    g = gated.gate
    assert g is not None  # the gate task always gives its verdict
    _log_metrics(
        metrics,
        {
            "passed": 1.0 if g.passed else 0.0,
            "baseline_metric": g.baseline_metric,
            "candidate_metric": g.candidate_metric,
            "drop": g.drop,
            "drop_upper": g.drop_upper,
            "allowed_drop": g.allowed_drop,
            "agreement": g.agreement,
            "n": g.n,
        },
    )
    cand = gated.candidate
    if cand.status == "ok" and cand.onnx and g.candidate_metric is not None:
        try:
            _confusion(settings, g.evidence, confusion)
        except Exception as err:  # display only: never fail the gate for it
            log.warning("no confusion matrix for %s: %s", _label(cand), err)
    return json.dumps(gated.model_dump(mode="json"))


def benchmark(dataset: Any, baseline_model: Any, outcome: str, metrics: Any) -> str:
    """Measure the candidate if it passed, end its run and record the trial (the search's "tell")."""
    spec, ing = job_of_dataset(dataset)
    if _no_trial(json.loads(outcome)):
        return outcome
    base = baseline_of(baseline_model)
    done: CandidateOutcome = _finished(
        tasks.benchmark_task(spec, Settings.resolve(), ing, base, Trial.model_validate_json(outcome))
    )
    _bench_metrics(metrics, done.benchmarks)
    if not done.benchmarks:
        metrics.log_metric("benchmarked", 0.0)
    return json.dumps(done.model_dump(mode="json"))


def trial(
    dataset: Any,
    baseline_model: Any,
    recipe: str,
    candidate: Any,
    gate_metrics: Any,
    confusion: Any,
    bench_metrics: Any,
) -> str:
    """One search trial, every phase of the candidate policy in this step (a pod): build, latency first,
    the gate, the benchmark if it passed, the record. Returns the trial's outcome as JSON."""
    built = optimize(dataset, baseline_model, recipe, candidate)
    gated = gate(dataset, baseline_model, built, gate_metrics, confusion)
    return benchmark(dataset, baseline_model, gated, bench_metrics)


def gate_verdict(dataset: Any, summary: Any) -> bool:
    """Whether any candidate of the search passed (what the pipeline's ``dsl.If`` branches on), with a
    one-line verdict and a table of the gate results as Markdown. Reads every recorded trial."""
    from squeezeflow.report import gate_markdown

    spec, ing = job_of_dataset(dataset)
    outcomes = tasks.search_outcomes_task(spec, Settings.resolve(), ing)
    Path(summary.path).write_text(gate_markdown(outcomes))
    log.info(tasks.gate_verdict(outcomes))
    return tasks.any_passed(outcomes)


def _write_reports(
    result: JobResult, published: PublishedReport | None, report_html: Any, report_markdown: Any
) -> None:
    """The job's report as KFP ``HTML`` and ``Markdown`` artifacts: the text the promote task published
    to the artifact store (never read back from it), else, when rendering it failed, the job's summary."""
    from squeezeflow.report import summary_html, summary_markdown

    if published is not None:
        md, page = published.markdown, published.html
    else:
        try:
            md, page = summary_markdown(result), summary_html(result)
        except Exception:  # a view of the result: a rendering bug must not fail the promotion's step
            log.warning("could not render the job's summary", exc_info=True)
            md = page = "The job report could not be rendered; the job's result is this step's output.\n"
    Path(report_markdown.path).write_text(md)
    Path(report_html.path).write_text(page)


#: The compress pipelines' outputs, from the promote step (see `champion_outputs`).
CHAMPION_OUTPUTS: tuple[str, ...] = (
    "promoted",
    "registered_model",
    "version",
    "alias",
    "model_uri",
    "result",
)


def champion_outputs(result: Mapping[str, Any]) -> dict[str, Any]:
    """What a pipeline run says about its promotion: whether a version was promoted, the registered
    model and alias (the targets even when nothing moved), the new version and its MLflow model URI
    (``models:/<name>/<version>``; both empty when nothing was promoted), and the job result as JSON."""
    p = result["promotion"]
    version = str(p.get("version") or "") if p["promoted"] else ""
    return {
        "promoted": bool(p["promoted"]),
        "registered_model": str(p["model_name"]),
        "version": version,
        "alias": str(p["alias"]),
        "model_uri": f"models:/{p['model_name']}/{version}" if version else "",
        "result": json.dumps(result),
    }


def promote(
    dataset: Any,
    baseline_model: Any,
    baseline_benchmarks: str,
    promoted_model: Any,
    metrics: Any,
    report_html: Any,
    report_markdown: Any,
) -> dict[str, Any]:
    """Promote the best eligible candidate (or nothing) and write the report; returns
    `champion_outputs`."""
    spec, ing = job_of_dataset(dataset)
    started = read_handle(dataset, "ingest").get("started")
    result, published = tasks.promote_and_report_task(
        spec,
        Settings.resolve(),
        ing,
        baseline_of(baseline_model),
        parse_baseline_benchmarks(json.loads(baseline_benchmarks)),
        started=started or None,
    )
    p = result.promotion
    write_handle(promoted_model, "promote", p.model_dump(mode="json"))
    promoted_ref = None
    if p.promoted:
        outcomes = tasks.search_outcomes_task(spec, Settings.resolve(), ing)
        chosen = next((o.candidate for o in outcomes if o.candidate.key == p.candidate_key), None)
        promoted_ref = chosen.onnx if chosen else None
    _ref_metadata(
        promoted_model,
        promoted_ref,
        promoted=bool(p.promoted),
        reason=p.reason,
        registered_model=p.model_name,
        alias=p.alias,
        version=p.version,
        candidate=p.candidate_label,
        tracking_uri=result.tracking_uri,
    )
    _log_metrics(
        metrics,
        {
            "promoted": 1.0 if p.promoted else 0.0,
            "baseline_metric": result.baseline_metric,
            "baseline_p50_ms": result.baseline_p50_ms,
            "baseline_size_bytes": result.baseline_size_bytes,
            "candidates": len(result.candidates),
            "seconds": result.seconds,
        },
    )
    row = next((r for r in result.candidates if r.candidate_key == p.candidate_key), None)
    if row is not None:
        _log_metrics(
            metrics,
            {
                "promoted_metric": row.metric,
                "promoted_p50_ms": row.p50_ms,
                "promoted_size_bytes": row.size_bytes,
            },
        )
    _write_reports(result, published, report_html, report_markdown)
    log.info("%s: %s", "promoted" if p.promoted else "not promoted", p.reason)
    return champion_outputs(result.model_dump(mode="json"))
