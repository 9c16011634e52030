"""A dataset is checked against what it may ask for before anything is allocated, and its splits must be
different data: a few bytes must not claim terabytes, and the gate must never judge on the data a
candidate was calibrated or fine-tuned on."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest

from squeezeflow.data import MAX_CLASSES, load_dataset, read_meta
from squeezeflow.errors import DataValidationError

SHAPE = [1, 4, 4]


def _write_dataset(root: Path, n: int = 40, seed: int = 0, **meta: object) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i, split in enumerate(("train", "val", "test")):
        x = rng.random((n, *SHAPE), dtype=np.float32) + i
        np.savez(root / f"{split}.npz", x=x, y=np.arange(n) % 2)
    doc = {"format": "squeezeflow.npz/v1", "num_classes": 2, "input_shape": SHAPE, **meta}
    (root / "dataset.json").write_text(json.dumps(doc))
    return root


def test_a_clean_dataset_loads_without_warnings(tmp_path: Path) -> None:
    ds = load_dataset(_write_dataset(tmp_path / "d"))
    assert len(ds.split("test")) == 40
    assert ds.warnings == []


def test_a_class_count_beyond_any_real_dataset_is_refused_before_allocating(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "d", num_classes=1_000_000_000)
    with pytest.raises(
        DataValidationError, match=rf"num_classes: Input should be less than or equal to {MAX_CLASSES}"
    ):
        read_meta(root / "dataset.json")


def test_a_sample_shape_beyond_any_real_model_is_refused(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "d")
    (root / "dataset.json").write_text(
        json.dumps({"format": "squeezeflow.npz/v1", "num_classes": 2, "input_shape": [8192, 8192, 3]})
    )
    with pytest.raises(DataValidationError, match=r"input_shape \[8192, 8192, 3\] is 201,326,592 values"):
        read_meta(root / "dataset.json")


def _lying_header_npz(path: Path, shape: tuple[int, ...]) -> None:
    """A 9 KB .npz whose x member's header declares ``shape`` (float32)."""
    x = io.BytesIO()
    np.lib.format.write_array_header_1_0(x, {"descr": "<f4", "fortran_order": False, "shape": shape})
    x.write(b"\0" * 8192)
    y = io.BytesIO()
    np.save(y, np.arange(40) % 2)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", x.getvalue())
        zf.writestr("y.npy", y.getvalue())


def test_an_npz_header_that_claims_more_than_the_file_holds_is_refused(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "d")
    _lying_header_npz(root / "train.npz", (10**11, 1, 28, 28))
    assert (root / "train.npz").stat().st_size < 10_000
    with pytest.raises(
        DataValidationError,
        match=r"split 'train' \(train\.npz\): the header of x declares shape \(100000000000, 1, 28, 28\) of "
        r"float32 \(313,600,000,000,000 bytes\), but the member holds 8,192 bytes",
    ):
        load_dataset(root)


def test_a_compressed_split_still_loads(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "d")
    with np.load(root / "val.npz") as z:
        x, y = z["x"].copy(), z["y"].copy()
    np.savez_compressed(root / "val.npz", x=x, y=y)
    with zipfile.ZipFile(root / "val.npz") as zf:
        assert zf.getinfo("x.npy").compress_type == zipfile.ZIP_DEFLATED
    np.testing.assert_array_equal(load_dataset(root).split("val").x, x)


def test_a_text_file_given_as_a_split_is_called_what_it_is(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "d")
    (root / "test.npz").write_text("id,label\n1,0\n")
    with pytest.raises(
        DataValidationError,
        match=r"split 'test' \(test\.npz\) is not an \.npz archive .*starts with b'id,label",
    ):
        load_dataset(root)


def test_two_splits_naming_the_same_file_are_refused(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "d")
    meta = json.loads((root / "dataset.json").read_text())
    meta["splits"] = {"train": "train.npz", "val": "val.npz", "test": "train.npz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataValidationError, match=r"names 'train\.npz' for both splits 'train' and 'test'"):
        load_dataset(root)


def test_two_splits_holding_the_same_data_are_refused(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "d")
    (root / "val.npz").write_bytes((root / "test.npz").read_bytes())
    with pytest.raises(
        DataValidationError, match=r"splits 'val' \(val\.npz\) and 'test' \(test\.npz\) hold the same data"
    ):
        load_dataset(root)


def test_test_samples_that_also_appear_in_train_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _write_dataset(tmp_path / "d")
    with np.load(root / "train.npz") as tr, np.load(root / "test.npz") as te:
        x, y = te["x"].copy(), te["y"].copy()
        x[:10] = tr["x"][:10]  # a quarter of the test inputs are training inputs
    np.savez(root / "test.npz", x=x, y=y)
    with caplog.at_level(logging.WARNING, logger="squeezeflow.data"):
        ds = load_dataset(root)
    assert ds.warnings == [
        "10 of the test split's 40 samples (25.0%) also appear in the train split: the gate's verdict on "
        "them says little about unseen data"
    ]
    assert ds.warnings[0] in caplog.text
