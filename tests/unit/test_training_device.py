"""Where recovery training runs (the spec's ``training`` section): the CPU by default, bit for bit as
before; a GPU when asked and present; a clear refusal, before any work, when asked and absent."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from squeezeflow.cli import app
from squeezeflow.errors import DeviceUnavailableError
from squeezeflow.spec.load import parse_spec
from squeezeflow.training import finetune
from squeezeflow.training_device import TrainingSetup, resolve_training
from squeezeflow.zoo.cnn import tiny_cnn
from tests.unit.test_spec import minimal

CLI = str(Path(sys.executable).with_name("squeezeflow"))
NO_GPU = not torch.cuda.is_available()


def test_training_defaults_to_the_cpu_and_leaves_the_job_key_of_older_specs_unchanged() -> None:
    plain = parse_spec(minimal())
    assert (plain.training.device, plain.training.precision, plain.training.deterministic) == (
        "cpu",
        "auto",
        True,
    )
    assert "training" not in json.loads(plain.canonical_json())
    written = parse_spec(minimal(training={"device": "cpu"}))
    assert written.digest() == plain.digest()
    assert parse_spec(minimal(training={"device": "cuda"})).digest() != plain.digest()


def test_an_unknown_training_device_is_refused_naming_the_choices() -> None:
    from squeezeflow.errors import SpecError

    with pytest.raises(SpecError, match=r"training\.device.*'auto', 'cpu' or 'cuda'"):
        parse_spec(minimal(training={"device": "tpu"}))


def test_the_schema_documents_the_training_section() -> None:
    res = CliRunner().invoke(app, ["spec", "schema"])
    assert res.exit_code == 0, res.output
    props = json.loads(res.output)["$defs"]["TrainingSpec"]["properties"]
    assert props["device"]["enum"] == ["auto", "cpu", "cuda"]
    assert props["precision"]["enum"] == ["auto", "fp32", "bf16", "fp16"]
    assert "exit 2" in props["device"]["description"]


def test_the_cpu_always_trains_in_fp32_and_auto_falls_back_to_it_without_a_gpu() -> None:
    assert resolve_training("cpu", "bf16") == TrainingSetup("cpu", "fp32", True)
    if NO_GPU:
        assert resolve_training("auto", "auto", deterministic=False) == TrainingSetup("cpu", "fp32", False)
    else:
        assert resolve_training("auto").device == "cuda"


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_with_exit_2_and_what_to_change() -> None:
    with pytest.raises(DeviceUnavailableError) as err:
        resolve_training("cuda")
    assert err.value.exit_code == 2
    assert "training.device is 'cuda'" in str(err.value) and "'cpu'" in str(err.value)


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_a_cuda_job_on_a_machine_without_a_gpu_stops_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "data").mkdir()
    spec = tmp_path / "job.yaml"
    spec.write_text(
        json.dumps(
            minimal(
                model={"format": "onnx", "uri": "m.onnx"}, data={"uri": "data"}, training={"device": "cuda"}
            )
        )
    )
    work = tmp_path / "work"
    done = subprocess.run(
        [CLI, "run", str(spec), "--workdir", str(work), "--artifacts", str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "training.device is 'cuda'" in done.stderr and "Traceback" not in done.stderr
    assert not work.exists() and not (tmp_path / "store").exists()  # nothing was created


def _task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    return x, (np.arange(n) % 10).astype(np.int64)


def _weights(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for value in model.state_dict().values():
        digest.update(value.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def test_a_cpu_setup_trains_exactly_what_training_without_one_trains() -> None:
    torch.manual_seed(0)
    base, teacher = tiny_cnn(), tiny_cnn()
    tx, ty = _task(128, 0)
    vx, vy = _task(32, 1)
    models = []
    for setup in (None, resolve_training("cpu", "bf16")):
        model = copy.deepcopy(base)
        model.load_state_dict = lambda *a, **k: None  # type: ignore[method-assign]  # keep the last epoch
        report = finetune(
            model, tx, ty, vx, vy, epochs=2, lr=3e-3, batch_size=32, teacher=teacher, setup=setup
        )
        assert (report.device, report.precision) == ("cpu", "fp32")
        models.append(model)
    assert _weights(models[0]) == _weights(models[1]) != _weights(base)


@pytest.mark.skipif(NO_GPU, reason="needs a CUDA GPU")
def test_training_on_a_gpu_leaves_the_model_and_the_teacher_on_the_cpu() -> None:
    torch.manual_seed(0)
    model, teacher = tiny_cnn(), tiny_cnn()
    tx, ty = _task(128, 0)
    vx, vy = _task(32, 1)
    report = finetune(
        model,
        tx,
        ty,
        vx,
        vy,
        epochs=2,
        lr=3e-3,
        batch_size=32,
        teacher=teacher,
        setup=resolve_training("cuda"),
    )
    assert report.device == "cuda"
    assert {p.device.type for p in [*model.parameters(), *teacher.parameters()]} == {"cpu"}


def test_mixed_precision_covers_gpu_training_steps_but_never_quantization_aware_training() -> None:
    import contextlib
    import warnings

    from squeezeflow.training_device import training_precision

    for setup, qat in ((TrainingSetup("cpu", "fp32"), False), (TrainingSetup("cuda", "bf16"), True)):
        autocast, scaler = training_precision(setup, quant_aware=qat)
        assert autocast is contextlib.nullcontext and scaler is None, setup
    autocast, scaler = training_precision(TrainingSetup("cuda", "bf16"), quant_aware=False)
    assert autocast is not contextlib.nullcontext and scaler is None  # bf16 needs no loss scaling
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a CPU-only build warns that the scaler would be disabled
        _, scaler = training_precision(TrainingSetup("cuda", "fp16"), quant_aware=False)
    assert scaler is not None  # fp16: gradients scaled so small ones survive
