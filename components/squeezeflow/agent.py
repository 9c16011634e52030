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

from squeezeflow.errors import DeviceUnavailableError, InfrastructureError
from squeezeflow.results import BenchmarkResult
from squeezeflow.spec.devices import DeviceProfile
from squeezeflow.spec.job import ModelSource
from squeezeflow.stages import Settings, StageContext
from squeezeflow.stages.benchmark import FAILURE_STAGE, REQUEST_STAGE, RESULT_STAGE, benchmark
from squeezeflow.store.artifacts import ArtifactRef, open_store

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
    source = request.get("torch_source")
    ctx = StageContext.open(settings, str(request.get("experiment") or "squeezeflow-agent"))
    try:
        return benchmark(
            ArtifactRef.model_validate(request["model"]),
            list(request["input_shape"]),
            profile,
            ctx,
            run_id=request.get("run_id"),
            model_id=request.get("model_id"),
            on_this_machine=True,
            torch_source=None if source is None else ModelSource.model_validate(source),
        )
    except DeviceUnavailableError as err:
        # This device cannot measure the profile at all: say so where the pipeline waits, instead of
        # letting it wait out its timeout.
        ctx.store.write_record(
            FAILURE_STAGE,
            str(request["key"]),
            {
                "key": request["key"],
                "submitted": request.get("submitted"),
                "profile": profile.name,
                "message": str(err),
                "failed_at": time.time(),
            },
        )
        raise


def serve(
    settings: Settings,
    profiles: set[str],
    once: bool = False,
    poll_s: float = 5.0,
    max_idle_s: float | None = None,
) -> int:
    """Serve requests until interrupted (or, with ``once``, until none is pending). Returns how many
    were measured. A request that fails is logged and retried on the next poll, except one for a
    profile this device cannot measure (`DeviceUnavailableError`), which is reported to the pipeline
    and not retried until it is submitted again."""
    done = 0
    refused: set[tuple[Any, Any]] = set()
    idle_since = time.monotonic()
    while True:
        try:
            reqs = pending_requests(settings, profiles)
        except InfrastructureError as err:  # the store is unreachable for now: keep serving
            log.warning("cannot list requests (%s); retrying in %.0f s", err, poll_s)
            reqs = []
        reqs = [r for r in reqs if (r.get("key"), r.get("submitted")) not in refused]
        evaluations = _serve_evaluations(settings, profiles)
        for req in reqs:
            try:
                r = serve_one(settings, req)
                done += 1
                log.info("measured %s on %s: p50 %.3f ms", req["model"]["uri"], r.profile, r.p50_ms)
            except DeviceUnavailableError as err:
                refused.add((req.get("key"), req.get("submitted")))
                log.error("request %s cannot be measured on this device: %s", req.get("key"), err)
            except Exception as err:  # one bad request must not stop the agent
                log.error("request %s failed: %s", req.get("key"), err)
        if reqs or evaluations:
            idle_since = time.monotonic()
        if once and not reqs and not evaluations:
            return done
        if max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
            return done
        time.sleep(poll_s)


def _serve_evaluations(settings: Settings, profiles: set[str]) -> int:
    """Run the pending held-out evaluations for ``profiles`` (see ``stages.device_eval``); returns how
    many were attempted. A failure is recorded where the gate waits, so the gate ends with its reason."""
    from squeezeflow.stages.device_eval import evaluate_here, pending_evaluations

    try:
        ctx = StageContext.open(settings, "squeezeflow-agent")
        requests = pending_evaluations(ctx, profiles)
    except InfrastructureError as err:
        log.warning("cannot list evaluation requests (%s)", err)
        return 0
    for req in requests:
        try:
            evaluate_here(req, ctx)
        except Exception as err:  # recorded for the gate by evaluate_here when it is the device's fault
            log.error("evaluation %s failed: %s", req.get("key"), err)
    return len(requests)
