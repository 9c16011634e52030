"""The device agent serves benchmark requests from the artifact store; a remote profile's measurement
outside Airflow waits for it (the CLI path), and the result is the record a local measurement writes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from squeezeflow.agent import pending_requests, serve
from squeezeflow.errors import DeviceUnavailableError, InfrastructureError
from squeezeflow.models.sources import export_onnx, load_torch_model
from squeezeflow.spec.devices import DeviceProfile
from squeezeflow.spec.job import ModelSource
from squeezeflow.stages import Settings, StageContext, benchmark
from squeezeflow.stages.benchmark import RESULT_STAGE, benchmark_key

pytestmark = pytest.mark.integration

EDGE = DeviceProfile(
    name="edge", remote=True, intra_op_threads=1, warmup=5, iterations=50, remote_timeout_s=120
)


def _onnx_ref(tmp_path: Path, tiny_model: Path, ctx: StageContext):  # type: ignore[no-untyped-def]
    source = ModelSource(format="state_dict", uri=str(tiny_model), factory="squeezeflow.zoo.cnn:tiny_cnn")
    path = export_onnx(load_torch_model(source, tiny_model), [1, 28, 28], tmp_path / "tiny.onnx")
    return ctx.store.put_file(path, suffix=".onnx")


def test_a_remote_measurement_waits_for_the_agent_and_records_like_a_local_one(
    tmp_path: Path, tiny_model: Path
) -> None:
    settings = Settings.resolve(
        artifacts=str(tmp_path / "store"),
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        workdir=tmp_path / "w",
    )
    ctx = StageContext.open(settings, "agent-test")
    ref = _onnx_ref(tmp_path, tiny_model, ctx)
    served: list[int] = []
    device = threading.Thread(
        target=lambda: served.append(serve(settings, {"edge"}, poll_s=0.2, max_idle_s=20)), daemon=True
    )
    device.start()
    result = benchmark(ref, [1, 28, 28], EDGE, ctx)  # blocks until the agent has measured it
    device.join(60)
    assert served == [1]
    assert result.profile == "edge" and result.p50_ms > 0
    assert ctx.store.read_record(RESULT_STAGE, benchmark_key(ref, [1, 28, 28], EDGE)) is not None
    assert pending_requests(settings, {"edge"}) == []
    # The measurement is the same record as a local one: asking again returns it without the agent.
    assert benchmark(ref, [1, 28, 28], EDGE, ctx).p50_ms == result.p50_ms


def test_without_an_agent_a_remote_measurement_fails_clearly_after_its_timeout(
    tmp_path: Path, tiny_model: Path
) -> None:
    settings = Settings.resolve(
        artifacts=str(tmp_path / "store"),
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        workdir=tmp_path / "w",
    )
    ctx = StageContext.open(settings, "agent-test")
    ref = _onnx_ref(tmp_path, tiny_model, ctx)
    lonely = EDGE.model_copy(update={"remote_timeout_s": 1.0})
    with pytest.raises(InfrastructureError, match="squeezeflow agent --profile edge"):
        benchmark(ref, [1, 28, 28], lonely, ctx)
    assert [r["profile"]["name"] for r in pending_requests(settings, set())] == ["edge"]


def test_an_agent_that_cannot_run_the_profiles_provider_ends_the_wait_with_its_reason(
    tmp_path: Path, tiny_model: Path
) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine's ONNX Runtime has CUDA: the refusal cannot be shown here")
    settings = Settings.resolve(
        artifacts=str(tmp_path / "store"),
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        workdir=tmp_path / "w",
    )
    ctx = StageContext.open(settings, "agent-test")
    ref = _onnx_ref(tmp_path, tiny_model, ctx)
    gpu = EDGE.model_copy(update={"name": "orin", "execution_provider": "CUDAExecutionProvider"})
    served: list[int] = []
    device = threading.Thread(
        target=lambda: served.append(serve(settings, {"orin"}, poll_s=0.2, max_idle_s=5)), daemon=True
    )
    device.start()
    started = time.monotonic()
    with pytest.raises(DeviceUnavailableError, match=r"CUDAExecutionProvider.*available here"):
        benchmark(ref, [1, 28, 28], gpu, ctx)  # long before its 120 s timeout
    assert time.monotonic() - started < 60
    device.join(60)
    assert served == [0]  # refused once, not retried
