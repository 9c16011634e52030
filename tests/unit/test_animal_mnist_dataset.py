"""The animal-mnist converter: integrity checks, safe unpickling, the split, and atomic, idempotent writes."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from squeezeflow.datasets import animal_mnist as am


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return am.prepare_animal_mnist(tmp_path_factory.mktemp("am") / "data", seed=0)


@pytest.fixture(scope="module")
def raw_labels() -> np.ndarray:
    return am.load_raw_arrays()[1]


def _tampered_copy(tmp_path: Path, filename: str) -> Path:
    src = tmp_path / "tampered"
    shutil.copytree(am.package_data_dir(), src)
    target = src / filename
    blob = bytearray(target.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    target.write_bytes(bytes(blob))
    return src


@pytest.mark.parametrize("filename", [am.DATA_FILE, am.LABEL_FILE])
def test_converter_refuses_archive_whose_hash_does_not_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, filename: str
) -> None:
    source = _tampered_copy(tmp_path, filename)

    def must_not_read(path: Path) -> Any:
        raise AssertionError(f"read {path} before checking the hashes")

    monkeypatch.setattr(am, "_read_archive", must_not_read)
    out = tmp_path / "out"
    with pytest.raises(am.DatasetIntegrityError, match="SHA-256 mismatch"):
        am.prepare_animal_mnist(out, source_dir=source)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tampered"]  # no temp directory left behind


def test_pinned_hashes_match_the_installed_package() -> None:
    data_dir = am.package_data_dir()
    assert am.sha256_file(data_dir / am.DATA_FILE) == am.DATA_SHA256
    assert am.sha256_file(data_dir / am.LABEL_FILE) == am.LABEL_SHA256


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_a_pickle_that_would_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_RunsShell(marker))
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle global"):
        am.restricted_load(io.BytesIO(payload))
    assert not marker.exists()


def test_restricted_unpickler_refuses_builtins_even_inside_an_array_pickle() -> None:
    payload = pickle.dumps({"a": np.arange(3), "f": eval}, protocol=4)
    with pytest.raises(pickle.UnpicklingError):
        am.restricted_load(io.BytesIO(payload))


def test_restricted_unpickler_refuses_object_arrays() -> None:
    payload = pickle.dumps(np.array([1, "two"], dtype=object), protocol=4)
    with pytest.raises(pickle.UnpicklingError, match="objects"):
        am.restricted_load(io.BytesIO(payload))


def test_restricted_unpickler_reads_plain_numpy_arrays_from_numpy1_and_numpy2_pickles() -> None:
    arr = np.arange(12, dtype=np.int64).reshape(3, 4)
    payload = pickle.dumps(arr, protocol=4)
    np.testing.assert_array_equal(am.restricted_load(io.BytesIO(payload)), arr)
    # numpy 1 names the reconstructor numpy.core.multiarray (as the animal-mnist archives do). Protocol 3
    # spells globals as newline-terminated text, so the module name can be swapped in place.
    legacy = pickle.dumps(arr, protocol=3).replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray" in legacy
    np.testing.assert_array_equal(am.restricted_load(io.BytesIO(legacy)), arr)


def test_raw_arrays_have_the_documented_shapes_and_balanced_classes(raw_labels: np.ndarray) -> None:
    images, labels = am.load_raw_arrays()
    assert images.dtype == np.uint8 and images.shape == (10_000, 28, 28)
    assert labels.dtype == np.int64 and labels.shape == (10_000,)
    assert np.bincount(labels).tolist() == [1000] * 10


def test_split_is_stratified_and_disjoint(raw_labels: np.ndarray) -> None:
    splits = am.stratified_split(raw_labels, am.SPLIT_FRACTIONS, seed=0)
    all_idx = np.concatenate(list(splits.values()))
    assert len(all_idx) == len(raw_labels) == len(np.unique(all_idx))  # disjoint and complete
    for name, expected in {"train": 700, "val": 150, "test": 150}.items():
        assert np.bincount(raw_labels[splits[name]], minlength=10).tolist() == [expected] * 10
        assert not np.all(np.diff(raw_labels[splits[name]]) >= 0)  # shuffled, not sorted by class
    again = am.stratified_split(raw_labels, am.SPLIT_FRACTIONS, seed=0)
    other = am.stratified_split(raw_labels, am.SPLIT_FRACTIONS, seed=1)
    assert all(np.array_equal(splits[k], again[k]) for k in splits)
    assert not np.array_equal(np.sort(splits["test"]), np.sort(other["test"]))


def test_written_dataset_follows_the_npz_v1_format(dataset_dir: Path) -> None:
    meta = json.loads((dataset_dir / "dataset.json").read_text())
    assert meta["format"] == "squeezeflow.npz/v1"
    assert meta["task"] == "classification"
    assert meta["name"] == "animal-mnist"
    assert meta["num_classes"] == 10 and len(meta["class_names"]) == 10
    assert meta["input_shape"] == [1, 28, 28]
    assert meta["splits"] == {"train": "train.npz", "val": "val.npz", "test": "test.npz"}
    assert meta["seed"] == 0 and "seed=0" in meta["source"]
    sizes = {}
    for split, filename in meta["splits"].items():
        with np.load(dataset_dir / filename, allow_pickle=False) as data:
            assert sorted(data.files) == ["x", "y"]
            x, y = data["x"], data["y"]
        assert x.dtype == np.float32 and x.shape[1:] == (1, 28, 28)
        assert y.dtype == np.int64 and y.shape == (x.shape[0],)
        assert np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.5
        assert np.bincount(y, minlength=10).min() == np.bincount(y).max()
        sizes[split] = len(y)
    assert sizes == {"train": 7000, "val": 1500, "test": 1500}


def test_prepare_is_idempotent(dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dataset_dir.iterdir()}

    def must_not_reload(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("rebuilt a dataset that was already complete")

    monkeypatch.setattr(am, "load_raw_arrays", must_not_reload)
    assert am.prepare_animal_mnist(dataset_dir, seed=0) == dataset_dir
    assert am.prepare_animal_mnist(str(dataset_dir), seed=0) == dataset_dir
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dataset_dir.iterdir()}
    assert after == before


def test_prepare_refuses_to_replace_another_seed_unless_told(tmp_path: Path) -> None:
    out = am.prepare_animal_mnist(tmp_path / "data", seed=0)
    with pytest.raises(FileExistsError, match="seed 0"):
        am.prepare_animal_mnist(out, seed=1)
    am.prepare_animal_mnist(out, seed=1, overwrite=True)
    assert json.loads((out / "dataset.json").read_text())["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temp or backup dirs left


def test_prepare_never_clobbers_a_directory_with_foreign_files(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        am.prepare_animal_mnist(out)
    with pytest.raises(FileExistsError):
        am.prepare_animal_mnist(out, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_crash_while_writing_leaves_no_half_written_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_savez = np.savez_compressed
    calls = []

    def crash_on_second_split(file: Any, **arrays: Any) -> None:
        calls.append(file)
        if len(calls) == 2:
            raise OSError("disk full")
        real_savez(file, **arrays)

    monkeypatch.setattr(np, "savez_compressed", crash_on_second_split)
    with pytest.raises(OSError, match="disk full"):
        am.prepare_animal_mnist(tmp_path / "data")
    assert list(tmp_path.iterdir()) == []


def test_converter_does_not_import_the_tensorflow_loader(tmp_path: Path) -> None:
    code = (
        "import sys; from squeezeflow.datasets.animal_mnist import prepare_animal_mnist; "
        f"prepare_animal_mnist({str(tmp_path / 'data')!r}); "
        "bad = [m for m in sys.modules if m.startswith(('tensorflow', 'animal_mnist.dataset_Loader', "
        "'animal_mnist.benchmarker'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert (tmp_path / "data" / "dataset.json").is_file()
