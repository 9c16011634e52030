"""Benchmark: latency, throughput and size of a model on a device profile, each model in its own
process with the profile's thread counts (and CPU affinity) applied."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from squeezeflow.errors import InfrastructureError, ModelLoadError
from squeezeflow.results import BenchmarkResult, content_key
from squeezeflow.spec import DeviceProfile
from squeezeflow.stages.context import StageContext
from squeezeflow.store import ArtifactRef

log = logging.getLogger(__name__)


def benchmark(
    model: ArtifactRef,
    input_shape: list[int],
    profile: DeviceProfile,
    ctx: StageContext,
    run_id: str | None = None,
    model_id: str | None = None,
    timeout_s: float = 600.0,
) -> BenchmarkResult:
    """Measure ``model`` on ``profile``. Idempotent per (model bytes, profile); metrics go to ``run_id``."""
    key = content_key("benchmark", model.sha256, profile.model_dump_json(), json.dumps(input_shape))
    recorded = ctx.store.read_record("benchmark", key)
    if recorded is not None:
        return BenchmarkResult.model_validate(recorded)

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
