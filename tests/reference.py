"""Real data and real trained models for the tests, built by the project's own scripts and cached
under .squeezeflow/test-cache (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from squeezeflow.datasets.animal_mnist import prepare_animal_mnist
from squeezeflow.zoo.train import train_reference_model

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".squeezeflow" / "test-cache"

# Few iterations: the tests check decisions, the benchmarks in bench/ measure speed.
TEST_DEVICE = {"name": "cpu-2t", "intra_op_threads": 2, "warmup": 20, "iterations": 300}
FAST_RECIPES = [
    {
        "name": "int8-static-u8s8",
        "steps": [{"name": "ort_static_int8", "params": {"calibration_samples": 128}}],
    },
    {"name": "int8-dynamic", "steps": [{"name": "ort_dynamic_int8"}]},
]


# What third-party libraries wrote into every job's output before squeezeflow quieted them (issue 17):
# torch's exporter on torchvision and its graph passes' INFO steps, Great Expectations' INFO chatter, ONNX
# Runtime's calibration prints and quantizer INFO lines, MLflow's INFO lines through its own stderr handler.
LIBRARY_NOISE = (
    "torchvision is not installed",
    "Skipping registering function",
    "for ephemeral docs site",
    "Collecting tensor data",
    "Finding optimal threshold",
    "Number of tensors",
    "Quantization parameters for tensor",
    "unused functions to remove",
    "Creating initial MLflow database tables",
)


def library_noise(output: str) -> list[str]:
    """The known library noise in ``output`` (whitespace-normalised: a console wraps long lines)."""
    flat = " ".join(output.split())
    return [noise for noise in LIBRARY_NOISE if noise in flat]


@pytest.fixture(scope="session")
def animal_mnist() -> Path:
    return prepare_animal_mnist(CACHE / "animal-mnist")


SUBSET = {"train": 600, "val": 200, "test": 200}


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory, animal_mnist: Path) -> Path:
    """A clean 600/200/200 subset of Animal-MNIST: validation takes well under a second."""
    import shutil

    import numpy as np

    out = tmp_path_factory.mktemp("animal-mnist-subset")
    shutil.copy(animal_mnist / "dataset.json", out / "dataset.json")
    for split, n in SUBSET.items():
        with np.load(animal_mnist / f"{split}.npz", allow_pickle=False) as z:
            np.savez(out / f"{split}.npz", x=z["x"][:n], y=z["y"][:n])
    return out


@pytest.fixture(scope="session")
def tiny_model(animal_mnist: Path) -> Path:
    """A few-thousand-parameter CNN: int8 makes it slower on a CPU, so it must never be promoted."""
    return train_reference_model("tiny_cnn", animal_mnist, CACHE / "tiny_cnn.pt")


@pytest.fixture(scope="session")
def wide_model(animal_mnist: Path) -> Path:
    """A wider ResNet-style CNN trained for two epochs (about 77% test accuracy): static int8 makes it
    about 2.5x faster on a CPU, a margin wide enough for tests that check promotion while other services
    share the cores."""
    return train_reference_model("wide_resnet", animal_mnist, CACHE / "wide_resnet-e2.pt", epochs=2)


def job_doc(model: Path | str, data: Path | str, name: str = "test-job", **overrides: Any) -> dict[str, Any]:
    """A job spec for a zoo model file (its factory is read from the file name) on ``data``."""
    name_of = Path(str(model)).name
    zoo = next(
        (z for z in ("tiny_cnn", "wide_resnet", "small_resnet") if name_of.startswith(z)), "small_resnet"
    )
    factory = f"squeezeflow.zoo.cnn:{zoo}"
    doc: dict[str, Any] = {
        "apiVersion": "squeezeflow/v1",
        "name": name,
        "model": {"format": "state_dict", "uri": str(model), "factory": factory},
        "data": {"uri": str(data)},
        "tolerance": {"mode": "absolute", "max_drop": 0.01},
        "devices": [TEST_DEVICE],
        "search": {"recipes": FAST_RECIPES, "max_trials": 4, "seed": 0},
        "registry": {"model_name": f"{name}-model", "alias": "champion"},
    }
    doc.update(overrides)
    return doc


def write_spec(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def tiny_module(path: Path) -> Any:
    """The trained tiny CNN as an eval-mode ``nn.Module`` (for tests that derive candidates from it)."""
    import torch

    from squeezeflow.zoo.cnn import tiny_cnn

    m = tiny_cnn()
    m.load_state_dict(torch.load(path, weights_only=True))
    return m.eval()
