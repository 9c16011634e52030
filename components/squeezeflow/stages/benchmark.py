"""Benchmark: latency, throughput and size of a model on a device profile, each model in its own
process with the profile's thread counts (and CPU affinity) applied."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

from squeezeflow.errors import InfrastructureError, ModelLoadError
from squeezeflow.results import BenchmarkResult, content_key
from squeezeflow.spec import DeviceProfile
from squeezeflow.stages.context import StageContext
from squeezeflow.store import ArtifactRef

log = logging.getLogger(__name__)


REQUEST_STAGE = "benchmark-request"
RESULT_STAGE = "benchmark"


def benchmark_key(model: ArtifactRef, input_shape: list[int], profile: DeviceProfile) -> str:
    """The record key of a measurement: the same wherever it is taken (worker or remote agent)."""
    return content_key("benchmark", model.sha256, profile.measurement_json(), json.dumps(input_shape))


def submit_remote(
    model: ArtifactRef,
    input_shape: list[int],
    profile: DeviceProfile,
    ctx: StageContext,
    experiment: str,
    run_id: str | None = None,
    model_id: str | None = None,
) -> str:
    """Ask the agent serving ``profile`` to measure ``model``: writes a request record; returns the key
    under which the result record (stage ``benchmark``) will appear."""
    key = benchmark_key(model, input_shape, profile)
    if ctx.store.read_record(RESULT_STAGE, key) is None and ctx.store.read_record(REQUEST_STAGE, key) is None:
        ctx.store.write_record(
            REQUEST_STAGE,
            key,
            {
                "key": key,
                "model": model.model_dump(mode="json"),
                "input_shape": input_shape,
                "profile": profile.model_dump(mode="json"),
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


def wait_for_result(
    ctx: StageContext, key: str, profile: DeviceProfile, poll_s: float = 2.0
) -> BenchmarkResult:
    """Block until the remote result record appears (used outside Airflow, which defers instead)."""
    deadline = time.monotonic() + profile.remote_timeout_s
    while True:
        recorded = ctx.store.read_record(RESULT_STAGE, key)
        if recorded is not None:
            return BenchmarkResult.model_validate(recorded)
        if time.monotonic() > deadline:
            raise InfrastructureError(
                f"no result from the device agent for profile {profile.name!r} "
                f"after {profile.remote_timeout_s:.0f} s "
                f"(is `squeezeflow agent --profile {profile.name}` running against this artifact store?)"
            )
        time.sleep(poll_s)


def benchmark(
    model: ArtifactRef,
    input_shape: list[int],
    profile: DeviceProfile,
    ctx: StageContext,
    run_id: str | None = None,
    model_id: str | None = None,
    timeout_s: float = 600.0,
    on_this_machine: bool = False,
) -> BenchmarkResult:
    """Measure ``model`` on ``profile``. Idempotent per (model bytes, profile); metrics go to ``run_id``.

    A ``remote`` profile is measured by its device agent: the request is submitted and this call waits
    for the result, unless ``on_this_machine`` (what the agent itself passes)."""
    key = benchmark_key(model, input_shape, profile)
    recorded = ctx.store.read_record("benchmark", key)
    if recorded is not None:
        return BenchmarkResult.model_validate(recorded)
    if profile.remote and not on_this_machine:
        submit_remote(model, input_shape, profile, ctx, ctx.tracker.experiment_name, run_id, model_id)
        return wait_for_result(ctx, key, profile)

    path = ctx.store.fetch(model, ctx.cache)
    request = {
        "model": str(path),
        "input_shape": input_shape,
        "intra_op_threads": profile.intra_op_threads,
        "inter_op_threads": profile.inter_op_threads,
        "batch_size": profile.batch_size,
        "warmup": profile.warmup,
        "iterations": profile.iterations,
    }
    env_threads = str(profile.intra_op_threads)
    import os

    env = {**os.environ, "OMP_NUM_THREADS": env_threads, "MKL_NUM_THREADS": env_threads}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "squeezeflow.bench_worker", json.dumps(request)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InfrastructureError(
            f"benchmark of {model.uri} on {profile.name} timed out after {timeout_s:.0f}s"
        ) from None
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise ModelLoadError(f"benchmark of {model.uri} on {profile.name} failed: {' | '.join(tail)}")
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    result = BenchmarkResult(
        key=key,
        model_sha256=model.sha256,
        profile=profile.name,
        batch_size=profile.batch_size,
        size_bytes=model.size,
        **m,
    )
    if run_id is not None:
        p = f"bench.{profile.name}"
        ctx.tracker.log(
            run_id,
            metrics={
                f"{p}.p50_ms": result.p50_ms,
                f"{p}.p95_ms": result.p95_ms,
                f"{p}.p99_ms": result.p99_ms,
                f"{p}.throughput_per_s": result.throughput_per_s,
                f"{p}.cv_p50": result.cv_p50,
            },
            model_id=model_id,
        )
    log.info(
        "benchmark %s on %s: p50 %.3f ms, p95 %.3f ms",
        model.uri.rsplit("/", 1)[-1],
        profile.name,
        result.p50_ms,
        result.p95_ms,
    )
    ctx.store.write_record("benchmark", key, result)
    return result
