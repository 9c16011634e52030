"""On-device evaluation: for a remote profile with `evaluate_on_device`, the device agent (a separate
serving loop on the artifact store) scores the candidate on the held-out split, and the gate compares
the device's answers with this machine's before it passes anything."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from squeezeflow.agent import serve
from squeezeflow.errors import DeviceUnavailableError, InfrastructureError
from squeezeflow.results import CandidateResult
from squeezeflow.spec.job import JobSpec
from squeezeflow.spec.load import parse_spec
from squeezeflow.spec.search import PassStep, Recipe
from squeezeflow.stages import Settings, StageContext, baseline, gate, ingest
from squeezeflow.stages.baseline import npy_bytes
from squeezeflow.stages.device_eval import RESULT_STAGE, evaluation_key
from tests.reference import TEST_DEVICE, job_doc

pytestmark = pytest.mark.integration

EDGE = {
    "name": "edge",
    "remote": True,
    "evaluate_on_device": True,
    "intra_op_threads": 1,
    "remote_timeout_s": 120,
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.resolve(
        artifacts=str(tmp_path / "store"),
        tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
        workdir=tmp_path / "w",
    )


def _spec(model: Path, data: Path, edge: dict[str, Any]) -> JobSpec:
    doc = job_doc(model, data, name="device-eval", devices=[TEST_DEVICE, edge])
    # The candidate is the baseline itself: no latency screening, whose short first round on a loaded
    # machine can show one of two identical models 1.5x slower than the other (seen in a CI run).
    doc["search"]["skip_slower_than"] = None
    return parse_spec(doc)


def _baseline_as_candidate(spec: JobSpec, ctx: StageContext) -> tuple[Any, Any, CandidateResult]:
    ing = ingest(spec, ctx)
    base = baseline(spec, ing, ctx)
    run_id = ctx.tracker.candidate_run(ing.parent_run_id, "same", "same", {})
    cand = CandidateResult(
        key="same",
        job_key=ing.job_key,
        recipe=Recipe(name="same", steps=[PassStep(name="ort_dynamic_int8")]),
        recipe_key="r",
        status="ok",
        onnx=base.onnx,
        run_id=run_id,
        seconds=0.0,
    )
    return ing, base, cand


def test_the_gate_passes_only_with_the_devices_answers_and_reports_their_agreement(
    settings: Settings, tiny_model: Path, animal_mnist: Path
) -> None:
    spec = _spec(tiny_model, animal_mnist, EDGE)
    ctx = StageContext.open(settings, "device-eval")
    ing, base, cand = _baseline_as_candidate(spec, ctx)
    agent = threading.Thread(target=serve, args=(settings, {"edge"}), kwargs={"poll_s": 0.2, "max_idle_s": 5})
    agent.start()
    verdict = gate(spec, ing, base, cand, ctx)
    agent.join(60)
    assert verdict.passed, verdict.reason
    device = next(g for g in verdict.guards if g.name == "device:edge")
    assert device.passed and device.value == 1.0 and device.limit == 0.99
    assert "CPUExecutionProvider" in device.detail and f"n={verdict.n}" in device.detail


def test_a_device_whose_answers_differ_fails_the_gate(
    settings: Settings, tiny_model: Path, animal_mnist: Path
) -> None:
    """The agent's result record is the interface: a device whose runtime answers differently on 5% of
    the held-out samples (here, its outputs rolled by one class on those samples) fails the guard."""
    spec = _spec(tiny_model, animal_mnist, EDGE)
    ctx = StageContext.open(settings, "device-eval")
    ing, base, cand = _baseline_as_candidate(spec, ctx)
    local = np.load(ctx.store.fetch(base.logits, ctx.cache))
    drifted = local.copy()
    rows = np.random.default_rng(0).choice(len(local), size=len(local) // 20, replace=False)
    drifted[rows] = np.roll(drifted[rows], 1, axis=1)
    ref = ctx.store.put_bytes(npy_bytes(drifted), suffix=".npy")
    key = evaluation_key(base.onnx, ing.dataset.sha256, spec.devices[1])
    ctx.store.write_record(RESULT_STAGE, key, {"key": key, "profile": "edge", "outputs": ref.model_dump()})

    verdict = gate(spec, ing, base, cand, ctx)
    assert not verdict.passed
    device = next(g for g in verdict.guards if g.name == "device:edge")
    assert not device.passed and device.value < 0.99
    assert "below the required 0.9900" in verdict.reason


def test_without_the_devices_answers_the_gate_fails_clearly_instead_of_passing(
    settings: Settings, tiny_model: Path, animal_mnist: Path
) -> None:
    spec = _spec(tiny_model, animal_mnist, {**EDGE, "remote_timeout_s": 1})
    ctx = StageContext.open(settings, "device-eval")
    ing, base, cand = _baseline_as_candidate(spec, ctx)
    with pytest.raises(InfrastructureError, match="squeezeflow agent --profile edge"):
        gate(spec, ing, base, cand, ctx)


def test_a_device_that_lacks_the_profiles_provider_ends_the_wait_with_its_reason(
    settings: Settings, tiny_model: Path, animal_mnist: Path
) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine's ONNX Runtime has CUDA: the refusal cannot be shown here")
    spec = _spec(tiny_model, animal_mnist, {**EDGE, "execution_provider": "CUDAExecutionProvider"})
    ctx = StageContext.open(settings, "device-eval")
    ing, base, cand = _baseline_as_candidate(spec, ctx)
    agent = threading.Thread(target=serve, args=(settings, {"edge"}), kwargs={"poll_s": 0.2, "max_idle_s": 5})
    agent.start()
    started = time.monotonic()
    with pytest.raises(DeviceUnavailableError, match="CUDAExecutionProvider"):
        gate(spec, ing, base, cand, ctx)
    assert time.monotonic() - started < 60
    agent.join(30)


def test_evaluate_on_device_is_refused_for_a_local_profile(tiny_model: Path, animal_mnist: Path) -> None:
    from squeezeflow.errors import SpecError

    with pytest.raises(SpecError, match="evaluate_on_device needs a remote"):
        _spec(tiny_model, animal_mnist, {**EDGE, "remote": False})


def test_an_airflow_gate_defers_until_the_device_has_answered_then_gives_its_verdict(
    settings: Settings, tiny_model: Path, animal_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In Airflow (``defer_remote``) the gate task does not wait in a worker: while the device owes its
    answers it returns `Pending` on their records, and the operator defers on that to the triggerer;
    once the record exists the same call gives the verdict, and the XCom is the trial's JSON."""
    pytest.importorskip("airflow")
    from airflow.sdk.exceptions import TaskDeferred

    from squeezeflow import tasks
    from squeezeflow.airflow.operators import SqueezeflowGateOperator
    from squeezeflow.results import Pending, Trial

    spec = _spec(tiny_model, animal_mnist, EDGE)
    ctx = StageContext.open(settings, "device-eval")
    ing, base, cand = _baseline_as_candidate(spec, ctx)
    key = evaluation_key(base.onnx, ing.dataset.sha256, spec.devices[1])

    waiting = tasks.gate_task(spec, settings, ing, base, Trial(candidate=cand), defer_remote=True)
    assert waiting == Pending(stage=RESULT_STAGE, keys={"edge": key})

    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    gate_op = SqueezeflowGateOperator(
        task_id="gate",
        spec=tasks.spec_json(spec),
        ingest=ing.model_dump(mode="json"),
        baseline=base.model_dump(mode="json"),
        outcome={"candidate": cand.model_dump(mode="json")},
        mlflow_conn_id=None,
        aws_conn_id=None,
        artifacts=settings.artifacts,
        workdir=str(settings.workdir),
    )
    with pytest.raises(TaskDeferred) as deferred:
        gate_op.execute({})  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    assert (trigger.stage, trigger.keys) == (RESULT_STAGE, [key])  # type: ignore[attr-defined]

    # the device answers (its outputs are this machine's): the task, resumed, gives the verdict
    local = ctx.store.put_bytes(npy_bytes(np.load(ctx.store.fetch(base.logits, ctx.cache))), suffix=".npy")
    ctx.store.write_record(RESULT_STAGE, key, {"key": key, "profile": "edge", "outputs": local.model_dump()})
    xcom = gate_op.execute({})  # type: ignore[arg-type]
    assert set(xcom) == {"candidate", "gate"} and xcom["gate"]["passed"], xcom
    assert Trial.model_validate(xcom).gate is not None
