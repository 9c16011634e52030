"""The device agent: runs on a target device (a phone test rig, a Jetson, an edge box) and measures the
models the pipelines ask it to, for the device profiles it serves.

Requests and results travel through the artifact store, so the device needs only outbound access to S3
(and MLflow, to log the numbers): a pipeline writes ``records/benchmark-request/<key>.json`` and waits (in
Airflow, deferred to the triggerer) for ``records/benchmark/<key>.json``, the same record a local
measurement writes. Run one agent per device profile::

    squeezeflow agent --profile pixel-8-cpu --artifacts s3://bucket/squeezeflow
"""

from __future__ import annotations

import logging
import time
from typing import Any

from squeezeflow.errors import InfrastructureError
from squeezeflow.results import BenchmarkResult
from squeezeflow.spec import DeviceProfile
from squeezeflow.stages import Settings, StageContext
from squeezeflow.stages.benchmark import REQUEST_STAGE, RESULT_STAGE, benchmark
from squeezeflow.store import ArtifactRef, open_store

log = logging.getLogger(__name__)


def pending_requests(settings: Settings, profiles: set[str]) -> list[dict[str, Any]]:
    """Requests for ``profiles`` (all profiles when empty) that have no result yet, oldest first."""
    store = open_store(settings.artifacts)
    out = []
    for key in store.list_keys(f"records/{REQUEST_STAGE}"):
        name = key.rsplit("/", 1)[-1].removesuffix(".json")
        req = store.read_record(REQUEST_STAGE, name)
        if req is None or (profiles and req.get("profile", {}).get("name") not in profiles):
            continue
        if store.read_record(RESULT_STAGE, name) is None:
            out.append(req)
    return sorted(out, key=lambda r: float(r.get("submitted", 0)))


def serve_one(settings: Settings, request: dict[str, Any]) -> BenchmarkResult:
    """Measure one request on this machine and record the result where the pipeline waits for it."""
    profile = DeviceProfile.model_validate(request["profile"])
    ctx = StageContext.open(settings, str(request.get("experiment") or "squeezeflow-agent"))
    return benchmark(
        ArtifactRef.model_validate(request["model"]),
        list(request["input_shape"]),
        profile,
        ctx,
        run_id=request.get("run_id"),
        model_id=request.get("model_id"),
        on_this_machine=True,
    )


def serve(
    settings: Settings,
    profiles: set[str],
    once: bool = False,
    poll_s: float = 5.0,
    max_idle_s: float | None = None,
) -> int:
    """Serve requests until interrupted (or, with ``once``, until none is pending). Returns how many
    were measured. A request that fails is logged and retried on the next poll."""
    done = 0
    idle_since = time.monotonic()
    while True:
        try:
            reqs = pending_requests(settings, profiles)
        except InfrastructureError as err:  # the store is unreachable for now: keep serving
            log.warning("cannot list requests (%s); retrying in %.0f s", err, poll_s)
            reqs = []
        for req in reqs:
            try:
                r = serve_one(settings, req)
                done += 1
                log.info("measured %s on %s: p50 %.3f ms", req["model"]["uri"], r.profile, r.p50_ms)
            except Exception as err:  # one bad request must not stop the agent
                log.error("request %s failed: %s", req.get("key"), err)
        if reqs:
            idle_since = time.monotonic()
        if once and not reqs:
            return done
        if max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
            return done
        time.sleep(poll_s)
