"""Benchmark: latency, throughput, peak memory, size, MACs and an energy estimate of a model on a
device profile, each model in its own process with the profile's thread counts (and CPU affinity)
applied, and the profile's budgets checked.

A profile this machine cannot measure (its execution provider is missing from this ONNX Runtime, or
failed to initialise) raises `DeviceUnavailableError` (exit code 2): a configuration to change, never
a silent fallback to the CPU. ``pytorch_eager`` profiles are a reference: they measure the baseline's
original PyTorch module (`measure_baseline`); candidates ship as ONNX and are not measured there
(`candidate_profiles` leaves those profiles out and `note_reference_skip` records why).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

from squeezeflow.errors import DeviceUnavailableError, InfrastructureError, ModelLoadError
from squeezeflow.results import BaselineResult, BenchmarkResult, IngestResult, content_key
from squeezeflow.spec.devices import DeviceBudgets, DeviceProfile
from squeezeflow.spec.job import JobSpec, ModelSource
from squeezeflow.stages.context import StageContext
from squeezeflow.store.artifacts import ArtifactRef

log = logging.getLogger(__name__)


REQUEST_STAGE = "benchmark-request"
RESULT_STAGE = "benchmark"
FAILURE_STAGE = "benchmark-failure"
REFERENCE_SKIP = (
    "not measured: pytorch_eager profiles measure the baseline's original PyTorch module only "
    "(candidates ship as ONNX)"
)


def effective_shape(input_shape: list[int], profile: DeviceProfile) -> list[int]:
    """The sample shape a profile measures with: its own ``input_shape`` if set, else the dataset's."""
    return list(profile.input_shape) if profile.input_shape is not None else list(input_shape)


def _source_json(torch_source: ModelSource | None) -> str:
    # Where the file came from does not change the measurement; its bytes (model.sha256) and how it
    # is built do.
    return "" if torch_source is None else torch_source.model_dump_json(exclude={"uri"})


def benchmark_key(
    model: ArtifactRef,
    input_shape: list[int],
    profile: DeviceProfile,
    torch_source: ModelSource | None = None,
    paired_with: ArtifactRef | None = None,
) -> str:
    """The record key of a measurement: the same wherever it is taken (worker or remote agent). A
    measurement paired with a baseline (`paired_baseline`) has its own key, naming the baseline's bytes."""
    paired = () if paired_with is None else (f"paired:{paired_with.sha256}",)
    return content_key(
        "benchmark/v2",
        model.sha256,
        profile.measurement_json(),
        json.dumps(effective_shape(input_shape, profile)),
        _source_json(torch_source),
        *paired,
    )


def paired_baseline(profile: DeviceProfile, baseline: ArtifactRef | None) -> ArtifactRef | None:
    """The baseline a candidate is measured paired with on ``profile`` (interleaved in one process, so
    the speedup has a confidence interval): ``baseline`` on a local ONNX Runtime profile; None on a
    remote or pytorch_eager one, whose comparison stays the two p50s."""
    if baseline is None or profile.remote or profile.runtime != "onnxruntime":
        return None
    return baseline


def _judged_by(recorded: dict[str, Any] | BenchmarkResult, profile: DeviceProfile) -> BenchmarkResult:
    """A recorded result with the budgets of ``profile`` as given in this job (budgets are not part of
    the measurement's key, so a record may have been written under other ones)."""
    result = recorded if isinstance(recorded, BenchmarkResult) else BenchmarkResult.model_validate(recorded)
    return result.model_copy(update={"budgets": profile.budgets})


def budget_violations(profile: DeviceProfile | DeviceBudgets, bench: BenchmarkResult) -> list[str]:
    """The budgets ``bench`` breaks, each as a sentence naming the measured value and the limit (empty:
    within every budget). A budget whose quantity was not measured (peak memory where the platform
    cannot read RSS) is reported as unverifiable, which also counts as a violation."""
    budgets = profile.budgets if isinstance(profile, DeviceProfile) else profile
    where = f"on {bench.profile}"
    out = []
    if budgets.max_p95_ms is not None and bench.p95_ms > budgets.max_p95_ms:
        out.append(f"p95 {bench.p95_ms:.3f} ms {where} exceeds its budget of {budgets.max_p95_ms:g} ms")
    if budgets.max_size_mb is not None and bench.size_bytes / 1e6 > budgets.max_size_mb:
        out.append(
            f"size {bench.size_bytes / 1e6:.3f} MB exceeds the {bench.profile} budget of "
            f"{budgets.max_size_mb:g} MB"
        )
    if budgets.max_peak_memory_mb is not None:
        used = bench.peak_rss_increase_mb
        if used is None:
            out.append(f"peak memory {where} was not measured, so its budget cannot be verified")
        elif used > budgets.max_peak_memory_mb:
            out.append(
                f"peak memory {used:.1f} MB {where} exceeds its budget of {budgets.max_peak_memory_mb:g} MB"
            )
    return out


def check_measurable_here(profiles: list[DeviceProfile]) -> None:
    """Refuse, before any work, a local (not ``remote``) profile whose execution provider this
    machine's ONNX Runtime lacks: the same `DeviceUnavailableError` its measurement would raise later."""
    local = [p for p in profiles if not p.remote and p.runtime == "onnxruntime"]
    if any(p.execution_provider != "CPUExecutionProvider" for p in local):
        import onnxruntime as ort

        from squeezeflow.devices.worker import check_provider

        available = ort.get_available_providers()
        for p in local:
            check_provider(p.name, p.execution_provider, available)


def candidate_profiles(profiles: list[DeviceProfile]) -> list[DeviceProfile]:
    """The profiles a candidate (an ONNX model) is measured on: all but the pytorch_eager references."""
    return [p for p in profiles if p.runtime != "pytorch_eager"]


def note_reference_skip(ctx: StageContext, profiles: list[DeviceProfile], run_id: str | None) -> None:
    """Record on the candidate's run why it has no measurement on the reference profiles."""
    skipped = [p.name for p in profiles if p.runtime == "pytorch_eager"]
    if not skipped:
        return
    log.info("%s: %s", ", ".join(skipped), REFERENCE_SKIP)
    if run_id is not None:
        ctx.tracker.log(run_id, tags={f"bench.{name}.skipped": REFERENCE_SKIP for name in skipped})


def submit_remote(
    model: ArtifactRef,
    input_shape: list[int],
    profile: DeviceProfile,
    ctx: StageContext,
    experiment: str,
    run_id: str | None = None,
    model_id: str | None = None,
    torch_source: ModelSource | None = None,
) -> str:
    """Ask the agent serving ``profile`` to measure ``model``: writes a request record; returns the key
    under which the result record (stage ``benchmark``) will appear."""
    key = benchmark_key(model, input_shape, profile, torch_source)
    # A request the agent refused before is submitted again (a new `submitted` time), so a fixed agent
    # takes it and the refusal no longer counts.
    if ctx.store.read_record(RESULT_STAGE, key) is None and (
        ctx.store.read_record(REQUEST_STAGE, key) is None or agent_failure(ctx, key) is not None
    ):
        ctx.store.write_record(
            REQUEST_STAGE,
            key,
            {
                "key": key,
                "model": model.model_dump(mode="json"),
                "input_shape": input_shape,
                "profile": profile.model_dump(mode="json"),
                "torch_source": None if torch_source is None else torch_source.model_dump(mode="json"),
                "experiment": experiment,
                "run_id": run_id,
                "model_id": model_id,
                "submitted": time.time(),
            },
        )
        log.info(
            "benchmark of %s on %s requested from its device agent",
            model.uri.rsplit("/", 1)[-1],
            profile.name,
        )
    return key


def agent_failure(ctx: StageContext, key: str) -> str | None:
    """Why the device agent could not measure the current request ``key``, when it reported that it
    cannot measure the profile at all (see `squeezeflow.agent`); None otherwise."""
    failure = ctx.store.read_record(FAILURE_STAGE, key)
    request = ctx.store.read_record(REQUEST_STAGE, key)
    if failure is None or request is None or failure.get("submitted") != request.get("submitted"):
        return None
    return str(failure.get("message") or "no reason recorded")


def wait_for_result(
    ctx: StageContext, key: str, profile: DeviceProfile, poll_s: float = 2.0
) -> BenchmarkResult:
    """Block until the remote result record appears (used outside Airflow, which defers instead). An
    agent that reports it cannot measure the profile ends the wait with `DeviceUnavailableError`."""
    deadline = time.monotonic() + profile.remote_timeout_s
    while True:
        recorded = ctx.store.read_record(RESULT_STAGE, key)
        if recorded is not None:
            return _judged_by(recorded, profile)
        failure = agent_failure(ctx, key)
        if failure is not None:
            raise DeviceUnavailableError(f"the device agent for profile {profile.name!r} reported: {failure}")
        if time.monotonic() > deadline:
            raise InfrastructureError(
                f"no result from the device agent for profile {profile.name!r} "
                f"after {profile.remote_timeout_s:.0f} s "
                f"(is `squeezeflow agent --profile {profile.name}` running against this artifact store?)"
            )
        time.sleep(poll_s)


def _log_metrics(ctx: StageContext, result: BenchmarkResult, run_id: str, model_id: str | None) -> None:
    p = f"bench.{result.profile}"
    optional = {
        f"{p}.peak_rss_mb": result.peak_rss_mb,
        f"{p}.peak_rss_increase_mb": result.peak_rss_increase_mb,
        f"{p}.params": result.params,
        f"{p}.macs": result.macs,
        f"{p}.int8_macs": result.int8_macs,
        f"{p}.energy_mj_est": result.energy_mj_est,
        f"{p}.speedup": result.speedup,
        f"{p}.speedup_low": result.speedup_low,
        f"{p}.speedup_high": result.speedup_high,
    }
    per_batch = {}
    for b in result.per_batch:
        per_batch[f"{p}.batch{b.batch_size}.p50_ms"] = b.p50_ms
        per_batch[f"{p}.batch{b.batch_size}.throughput_per_s"] = b.throughput_per_s
    ctx.tracker.log(
        run_id,
        metrics={
            f"{p}.p50_ms": result.p50_ms,
            f"{p}.p90_ms": result.p90_ms,
            f"{p}.p95_ms": result.p95_ms,
            f"{p}.p99_ms": result.p99_ms,
            f"{p}.throughput_per_s": result.throughput_per_s,
            f"{p}.cv_p50": result.cv_p50,
            **{k: float(v) for k, v in optional.items() if v is not None},
            **per_batch,
        },
        model_id=model_id,
    )


def run_worker(request: dict[str, Any], threads: int, what: str, timeout_s: float) -> dict[str, Any]:
    """Run the benchmark worker on ``request`` in its own process; its numbers, or the error that says
    why the profile cannot be measured here."""
    from squeezeflow.devices.worker import EXIT_DEVICE_UNAVAILABLE

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "squeezeflow.devices.worker", json.dumps(request)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InfrastructureError(f"benchmark of {what} timed out after {timeout_s:.0f}s") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == EXIT_DEVICE_UNAVAILABLE and lines:
        raise DeviceUnavailableError(str(json.loads(lines[-1]).get("message")))
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise ModelLoadError(f"benchmark of {what} failed: {' | '.join(tail)}")
    return dict(json.loads(lines[-1]))


def benchmark(
    model: ArtifactRef,
    input_shape: list[int],
    profile: DeviceProfile,
    ctx: StageContext,
    run_id: str | None = None,
    model_id: str | None = None,
    timeout_s: float = 600.0,
    on_this_machine: bool = False,
    torch_source: ModelSource | None = None,
    paired_with: ArtifactRef | None = None,
    screen_slower_than: float | None = None,
) -> BenchmarkResult:
    """Measure ``model`` on ``profile``. Idempotent per (model bytes, profile, paired baseline); metrics
    go to ``run_id``.

    A ``remote`` profile is measured by its device agent: the request is submitted and this call waits
    for the result, unless ``on_this_machine`` (what the agent itself passes). On a ``pytorch_eager``
    profile, ``model`` is the PyTorch file and ``torch_source`` says how to load it. With
    ``paired_with`` (a baseline's ONNX) on a local ONNX Runtime profile, ``model`` is measured
    interleaved with it in one worker and the result carries the speedup with its confidence interval
    (see `squeezeflow.devices.worker.paired_rounds`); elsewhere ``paired_with`` is ignored. Paired, with
    ``screen_slower_than``: a short screening round first, and a candidate it shows that many times
    slower than the baseline is not measured further (the record has ``rounds`` 0)."""
    paired_with = paired_baseline(profile, paired_with)
    if profile.runtime == "pytorch_eager" and torch_source is None:
        raise ModelLoadError(
            f"profile {profile.name!r} runs PyTorch eager: it measures the baseline's PyTorch module and "
            "needs its model source (candidates are not measured there)"
        )
    key = benchmark_key(model, input_shape, profile, torch_source, paired_with)
    recorded = ctx.store.read_record(RESULT_STAGE, key)
    if recorded is not None:
        return _judged_by(recorded, profile)
    if profile.remote and not on_this_machine:
        submit_remote(
            model, input_shape, profile, ctx, ctx.tracker.experiment_name, run_id, model_id, torch_source
        )
        return wait_for_result(ctx, key, profile)

    path = ctx.store.fetch(model, ctx.cache)
    request = {
        "model": str(path),
        "profile": profile.name,
        "runtime": profile.runtime,
        "execution_provider": profile.execution_provider,
        "input_shape": effective_shape(input_shape, profile),
        "intra_op_threads": profile.intra_op_threads,
        "inter_op_threads": profile.inter_op_threads,
        "batch_size": profile.batch_size,
        "extra_batch_sizes": profile.extra_batch_sizes,
        "warmup": profile.warmup,
        "iterations": profile.iterations,
        "torch_source": None if torch_source is None else torch_source.model_dump(mode="json"),
    }
    if paired_with is not None:
        request["paired_with"] = str(ctx.store.fetch(paired_with, ctx.cache))
        if screen_slower_than is not None:
            request["screen_slower_than"] = screen_slower_than
    what = f"{model.uri} on {profile.name}"
    m = run_worker(request, profile.intra_op_threads, what, timeout_s)
    result = BenchmarkResult(
        key=key,
        model_sha256=model.sha256,
        profile=profile.name,
        batch_size=profile.batch_size,
        size_bytes=model.size,
        budgets=profile.budgets,
        paired_baseline_sha256=None if paired_with is None else paired_with.sha256,
        **m,
    )
    if run_id is not None:
        _log_metrics(ctx, result, run_id, model_id)
    log.info(
        "benchmark %s on %s: p50 %.3f ms, p95 %.3f ms, peak +%s MB, %s MACs, ~%s mJ",
        model.uri.rsplit("/", 1)[-1],
        profile.name,
        result.p50_ms,
        result.p95_ms,
        "?" if result.peak_rss_increase_mb is None else f"{result.peak_rss_increase_mb:.1f}",
        result.macs,
        "?" if result.energy_mj_est is None else f"{result.energy_mj_est:.4f}",
    )
    if result.speedup is not None:
        log.info(
            "paired with the baseline: %.2fx (%s)",
            result.speedup,
            f"95% CI {result.speedup_low:.2f}-{result.speedup_high:.2f}"
            if result.speedup_low is not None and result.speedup_high is not None
            else "too few pairs for an interval",
        )
    ctx.store.write_record(RESULT_STAGE, key, result)
    return result


def baseline_model(
    spec: JobSpec, ingest: IngestResult, base: BaselineResult, profile: DeviceProfile
) -> tuple[ArtifactRef, ModelSource | None]:
    """What the baseline is on ``profile``: its exported ONNX, or on a pytorch_eager profile the
    original PyTorch file and the source that loads it."""
    if profile.runtime == "pytorch_eager":
        return ingest.model_source, spec.model
    return base.onnx, None


def measure_baseline(
    spec: JobSpec,
    ingest: IngestResult,
    base: BaselineResult,
    profile: DeviceProfile,
    ctx: StageContext,
) -> BenchmarkResult:
    """The baseline on ``profile`` (its original PyTorch module on a pytorch_eager profile)."""
    model, source = baseline_model(spec, ingest, base, profile)
    return benchmark(
        model,
        ingest.dataset.input_shape,
        profile,
        ctx,
        run_id=base.parent_run_id,
        model_id=base.model_id,
        torch_source=source,
    )
