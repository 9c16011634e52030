"""On-device evaluation: the device agent scores a candidate on the held-out split with the profile's own
runtime and execution provider, and the gate compares those predictions with this machine's.

Users of other tools report models that pass on the build machine and collapse on the device (a
different execution provider, kernels, or arithmetic). For a remote profile with
``evaluate_on_device: true`` the gate writes an evaluation request next to the benchmark requests,
the agent runs the held-out inputs through the model there and stores its outputs, and the gate
reports how often the device's top-1 answers equal the local ones and the device's own metric.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from squeezeflow.errors import DeviceUnavailableError, InfrastructureError, IntegrityError
from squeezeflow.results import content_key
from squeezeflow.spec.devices import DeviceProfile
from squeezeflow.stages.context import StageContext
from squeezeflow.store.artifacts import ArtifactRef

log = logging.getLogger(__name__)

REQUEST_STAGE = "evaluation-request"
RESULT_STAGE = "evaluation"
FAILURE_STAGE = "evaluation-failure"


def evaluation_key(model: ArtifactRef, dataset_sha256: str, profile: DeviceProfile) -> str:
    return content_key("evaluation", model.sha256, dataset_sha256, profile.measurement_json())


def submit_evaluation(
    model: ArtifactRef, dataset_uri: str, dataset_sha256: str, profile: DeviceProfile, ctx: StageContext
) -> str:
    """Ask the agent serving ``profile`` to score ``model`` on the held-out split; returns the key of the
    result record."""
    key = evaluation_key(model, dataset_sha256, profile)
    if ctx.store.read_record(RESULT_STAGE, key) is None and ctx.store.read_record(REQUEST_STAGE, key) is None:
        ctx.store.write_record(
            REQUEST_STAGE,
            key,
            {
                "key": key,
                "model": model.model_dump(mode="json"),
                "dataset_uri": dataset_uri,
                "dataset_sha256": dataset_sha256,
                "profile": profile.model_dump(mode="json"),
                "submitted": time.time(),
            },
        )
        log.info("held-out evaluation of %s requested from the %s agent", model.uri, profile.name)
    return key


def wait_for_evaluation(
    ctx: StageContext, key: str, profile: DeviceProfile, poll_s: float = 1.0
) -> np.ndarray:
    """The device's held-out outputs, once its agent has written them (or a clear error)."""
    from squeezeflow.stages.baseline import load_npy

    deadline = time.monotonic() + profile.remote_timeout_s
    while True:
        recorded = ctx.store.read_record(RESULT_STAGE, key)
        if recorded is not None:
            return load_npy(ctx.store.fetch(ArtifactRef.model_validate(recorded["outputs"]), ctx.cache))
        failure = ctx.store.read_record(FAILURE_STAGE, key)
        if failure is not None:
            raise DeviceUnavailableError(f"the {profile.name} agent could not evaluate: {failure['message']}")
        if time.monotonic() > deadline:
            raise InfrastructureError(
                f"no held-out evaluation from the device agent for profile {profile.name!r} after "
                f"{profile.remote_timeout_s:.0f} s (is `squeezeflow agent --profile {profile.name}` running "
                "against this artifact store?)"
            )
        time.sleep(poll_s)


def pending_evaluations(ctx: StageContext, profiles: set[str]) -> list[dict[str, Any]]:
    out = []
    for key in ctx.store.list_keys(f"records/{REQUEST_STAGE}"):
        name = key.rsplit("/", 1)[-1].removesuffix(".json")
        req = ctx.store.read_record(REQUEST_STAGE, name)
        if req is None or (profiles and req.get("profile", {}).get("name") not in profiles):
            continue
        if (
            ctx.store.read_record(RESULT_STAGE, name) is None
            and ctx.store.read_record(FAILURE_STAGE, name) is None
        ):
            out.append(req)
    return sorted(out, key=lambda r: float(r.get("submitted", 0)))


def evaluate_here(request: dict[str, Any], ctx: StageContext) -> None:
    """Run one evaluation request on this machine (what the agent calls) and record its outputs."""
    import onnxruntime as ort

    from squeezeflow.devices.worker import check_provider
    from squeezeflow.runtime import predict_logits
    from squeezeflow.stages.baseline import npy_bytes

    profile = DeviceProfile.model_validate(request["profile"])
    key = str(request["key"])
    try:
        check_provider(profile.name, profile.execution_provider, ort.get_available_providers())
        ds = ctx.dataset(str(request["dataset_uri"]))
        if ds.sha256 != request["dataset_sha256"]:
            raise IntegrityError(
                f"the dataset at {request['dataset_uri']} has changed since the gate asked "
                f"(sha256 {ds.sha256[:12]} here, {str(request['dataset_sha256'])[:12]} requested)"
            )
        path = ctx.store.fetch(ArtifactRef.model_validate(request["model"]), ctx.cache)
        test = ds.split("test")
        outputs = predict_logits(
            path, test.x, threads=profile.intra_op_threads, provider=profile.execution_provider
        )
    except (DeviceUnavailableError, IntegrityError) as err:
        ctx.store.write_record(
            FAILURE_STAGE,
            key,
            {"key": key, "profile": profile.name, "message": str(err), "failed_at": time.time()},
        )
        raise
    ref = ctx.store.put_bytes(npy_bytes(outputs.astype(np.float32)), suffix=".npy")
    ctx.store.write_record(
        RESULT_STAGE,
        key,
        {"key": key, "profile": profile.name, "outputs": ref.model_dump(mode="json"), "n": len(outputs)},
    )
    log.info("evaluated %s on %s: %d held-out samples", request["model"]["uri"], profile.name, len(outputs))


def device_agreement(local: np.ndarray, device: np.ndarray) -> tuple[float, float]:
    """(fraction of samples whose top-1 answer is the same, largest absolute output difference)."""
    if local.shape != device.shape:
        return 0.0, float("inf")
    same = float(np.mean(np.argmax(local, 1) == np.argmax(device, 1)))
    return same, float(np.max(np.abs(local.astype(np.float64) - device.astype(np.float64))))
