"""The reference model zoo and its trainer: shapes, ONNX export, learning, caching, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from squeezeflow.datasets.animal_mnist import prepare_animal_mnist
from squeezeflow.zoo import train as zoo_train
from squeezeflow.zoo.cnn import FACTORIES, resnet18_style, small_resnet, tiny_cnn
from squeezeflow.zoo.train import TrainResult, evaluate, load_split, train_classifier, train_reference_model


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_animal_mnist(tmp_path_factory.mktemp("zoo") / "data", seed=0)


@pytest.fixture(scope="module")
def trained_tiny(dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny_cnn.pt"
    # One thread: on a CI box whose two cores are shared, two threads can be many times slower.
    return train_reference_model("tiny_cnn", dataset_dir, out, seed=0, progress=False, num_threads=1)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_factories_build_models_that_map_images_to_logits(name: str) -> None:
    model = FACTORIES[name](num_classes=7, in_channels=3).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 28, 28)).shape == (2, 7)
    default = FACTORIES[name]().eval()
    with torch.no_grad():
        assert default(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_model_sizes_match_their_descriptions() -> None:
    def count(model: torch.nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    assert 1_000 <= count(tiny_cnn()) <= 10_000
    assert 30_000 <= count(small_resnet()) <= 200_000
    assert count(small_resnet(width=32)) > count(small_resnet())
    assert 10_500_000 <= count(resnet18_style()) <= 11_500_000


def test_small_resnet_exports_to_onnx_and_matches_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = small_resnet()
    with torch.no_grad():  # non-trivial BatchNorm statistics and residual branches
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    model.eval()
    x = torch.rand(2, 1, 28, 28)
    path = tmp_path / "small_resnet.onnx"
    torch.onnx.export(
        model,
        (x,),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
        external_data=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    for batch in (1, 5):  # the batch dimension is dynamic
        xb = torch.rand(batch, 1, 28, 28)
        with torch.no_grad():
            expected = model(xb).numpy()
        (got,) = session.run(["logits"], {"input": xb.numpy()})
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_tiny_cnn_learns_animal_mnist(trained_tiny: Path, dataset_dir: Path) -> None:
    meta = json.loads(trained_tiny.with_suffix(".json").read_text())
    assert meta["test_accuracy"] >= 0.8
    assert meta["val_accuracy"] >= 0.8
    # The saved file is a bare state_dict that a fresh factory-built model loads and reproduces.
    state = torch.load(trained_tiny, weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    model = tiny_cnn()
    model.load_state_dict(state)
    x_test, y_test = load_split(dataset_dir, "test")
    assert evaluate(model, x_test, y_test) == pytest.approx(meta["test_accuracy"])


def test_reference_model_sidecar_names_the_factory_and_results(trained_tiny: Path) -> None:
    meta = json.loads(trained_tiny.with_suffix(".json").read_text())
    assert meta["factory"] == "squeezeflow.zoo.cnn:tiny_cnn"
    assert meta["epochs"] == zoo_train.DEFAULT_EPOCHS["tiny_cnn"]
    assert meta["seed"] == 0
    assert meta["torch_version"] == torch.__version__
    assert meta["seconds"] > 0
    assert meta["factory_kwargs"] == {"num_classes": 10, "in_channels": 1}
    assert sorted(p.name for p in trained_tiny.parent.iterdir()) == ["tiny_cnn.json", "tiny_cnn.pt"]


def test_reference_model_is_not_retrained_when_cached(
    trained_tiny: Path, dataset_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def must_not_train(*args: Any, **kwargs: Any) -> TrainResult:
        raise AssertionError("retrained a cached model")

    monkeypatch.setattr(zoo_train, "train_classifier", must_not_train)
    mtime = trained_tiny.stat().st_mtime_ns
    assert train_reference_model("tiny_cnn", dataset_dir, trained_tiny, progress=False) == trained_tiny
    argv = ["--model", "tiny_cnn", "--data", str(dataset_dir), "--out", str(trained_tiny), "--no-progress"]
    assert zoo_train.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["factory"] == "squeezeflow.zoo.cnn:tiny_cnn"
    assert trained_tiny.stat().st_mtime_ns == mtime
    # Another seed or epoch count is a different model: it is trained.
    with pytest.raises(AssertionError, match="retrained"):
        train_reference_model("tiny_cnn", dataset_dir, trained_tiny, epochs=1, progress=False)


def test_training_is_reproducible_for_a_seed(dataset_dir: Path) -> None:
    states = []
    for _ in range(2):
        torch.manual_seed(123)
        model = tiny_cnn()
        train_classifier(model, dataset_dir, epochs=1, seed=5, progress=False, augment=True, num_threads=1)
        states.append(model.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_max_seconds_stops_training_early(dataset_dir: Path) -> None:
    threads = torch.get_num_threads()
    result = train_classifier(
        tiny_cnn(), dataset_dir, epochs=50, max_seconds=0.0, progress=False, num_threads=1
    )
    assert torch.get_num_threads() == threads  # restored
    assert result.stopped_early
    assert result.epochs_run == 1
    assert 0.0 <= result.test_accuracy <= 1.0


def test_unknown_reference_model_is_rejected(dataset_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model"):
        train_reference_model("vgg", dataset_dir, tmp_path / "m.pt")


def test_the_training_record_gives_the_epochs_run_not_the_recipes_default(
    dataset_dir: Path, tmp_path: Path
) -> None:
    out = train_reference_model("tiny_cnn", dataset_dir, tmp_path / "tiny1.pt", epochs=1, progress=False)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["epochs"] == meta["training"]["epochs"] == 1 != zoo_train.DEFAULT_EPOCHS["tiny_cnn"]
