"""Convert the data shipped in the ``animal-mnist`` PyPI package into ``squeezeflow.npz/v1``.

The package ships two gzipped pickles of plain numpy arrays (10,000 28x28 ``uint8`` silhouettes and
their ``int64`` labels, sorted by class, with no train/test split). This module:

* locates them without importing ``animal_mnist.dataset_Loader`` (which imports TensorFlow);
* checks each archive's SHA-256 against a pinned value *before* reading a single byte of it;
* unpickles them with an unpickler that can only rebuild numpy arrays (never plain ``pickle.load``);
* makes a seeded, stratified 70/15/15 split and writes the dataset atomically (temp dir + rename).

See ``docs/dataset-format.md`` for the output format.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import logging
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct  # type: ignore[no-redef]

__all__ = [
    "CLASS_NAMES",
    "DATASET_NAME",
    "DATA_FILE",
    "DATA_SHA256",
    "FORMAT",
    "LABEL_FILE",
    "LABEL_SHA256",
    "SPLIT_FRACTIONS",
    "DatasetIntegrityError",
    "RestrictedNumpyUnpickler",
    "load_raw_arrays",
    "prepare_animal_mnist",
    "restricted_load",
    "sha256_file",
    "stratified_split",
]

logger = logging.getLogger(__name__)

FORMAT: Final = "squeezeflow.npz/v1"
DATASET_NAME: Final = "animal-mnist"
PACKAGE: Final = "animal_mnist"
PACKAGE_VERSION: Final = "0.4"
DATA_FILE: Final = "animal_data_version_3.gz"
LABEL_FILE: Final = "animal_label_version_3.gz"
DATA_SHA256: Final = "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce"
LABEL_SHA256: Final = "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57"
NUM_CLASSES: Final = 10
IMAGE_SHAPE: Final = (28, 28)
NUM_SAMPLES: Final = 10_000
# The package's README lists ten animals but does not say which label is which, so the names stay generic.
CLASS_NAMES: Final[tuple[str, ...]] = tuple(f"class_{i}" for i in range(NUM_CLASSES))
SPLIT_FRACTIONS: Final[dict[str, float]] = {"train": 0.70, "val": 0.15, "test": 0.15}
SPLIT_FILES: Final[dict[str, str]] = {name: f"{name}.npz" for name in SPLIT_FRACTIONS}
METADATA_FILE: Final = "dataset.json"
_DATASET_FILES: Final = frozenset({METADATA_FILE, *SPLIT_FILES.values()})


class DatasetIntegrityError(ValueError):
    """A source archive does not have the pinned SHA-256, or its arrays are not what they should be."""


# (module, name) pairs a data pickle may reference, mapped to the object to hand back. numpy 2 moved
# ``numpy.core`` to ``numpy._core``; pickles written by numpy 1 say ``numpy.core``.
_ALLOWED_GLOBALS: Final[dict[tuple[str, str], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class ReadableBinary(Protocol):
    """What :class:`pickle.Unpickler` reads from: a binary file object (plain, gzip, BytesIO)."""

    def read(self, n: int = ..., /) -> bytes:
        """Read up to ``n`` bytes."""
        ...

    def readline(self, size: int = ..., /) -> bytes:
        """Read one line."""
        ...


class RestrictedNumpyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild plain numpy arrays and nothing else.

    Any other global (``os.system``, ``builtins.eval``, ...) raises :class:`pickle.UnpicklingError`
    before it is called, so a malicious pickle cannot run code.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed numpy global, refusing everything else."""
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: only plain numpy arrays are allowed"
            ) from None


def restricted_load(fileobj: ReadableBinary) -> npt.NDArray[Any]:
    """Unpickle one numpy array from ``fileobj`` with :class:`RestrictedNumpyUnpickler`."""
    obj = RestrictedNumpyUnpickler(fileobj).load()
    if not isinstance(obj, np.ndarray):
        raise pickle.UnpicklingError(f"expected a numpy array, got {type(obj).__name__}")
    if obj.dtype.hasobject:
        raise pickle.UnpicklingError("refusing a numpy array of Python objects")
    return obj


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Return the hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def package_data_dir() -> Path:
    """Return the directory of the installed ``animal-mnist`` package that holds the archives.

    Uses :func:`importlib.util.find_spec`, which does not execute the package (and so never imports
    ``animal_mnist.dataset_Loader`` and TensorFlow).
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {PACKAGE!r} package is not installed; install animal-mnist=={PACKAGE_VERSION}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "Animal_MNIST"
        if (candidate / DATA_FILE).is_file():
            return candidate
    raise FileNotFoundError(f"{DATA_FILE} not found in the installed {PACKAGE!r} package")


def _verified_path(source_dir: Path, filename: str, expected_sha256: str) -> Path:
    path = source_dir / filename
    if not path.is_file():
        raise FileNotFoundError(f"dataset archive not found: {path}")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise DatasetIntegrityError(
            f"SHA-256 mismatch for {path}: expected {expected_sha256}, got {actual}; "
            f"refusing to read it (is animal-mnist=={PACKAGE_VERSION} installed unmodified?)"
        )
    return path


def _read_archive(path: Path) -> npt.NDArray[Any]:
    with gzip.open(path, "rb") as fh:
        return restricted_load(fh)


def load_raw_arrays(source_dir: Path | None = None) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Verify and load the raw images and labels.

    Args:
        source_dir: directory holding the two archives; defaults to the installed package's data dir.

    Returns:
        ``(images, labels)``: ``uint8`` of shape ``(10000, 28, 28)`` and ``int64`` of shape ``(10000,)``.

    Raises:
        DatasetIntegrityError: an archive's hash, or the arrays' dtype/shape/values, are wrong.
    """
    source_dir = package_data_dir() if source_dir is None else Path(source_dir)
    # Both hashes are checked before either archive is opened.
    data_path = _verified_path(source_dir, DATA_FILE, DATA_SHA256)
    label_path = _verified_path(source_dir, LABEL_FILE, LABEL_SHA256)
    images = _read_archive(data_path)
    labels = _read_archive(label_path)
    if images.dtype != np.uint8 or images.shape != (NUM_SAMPLES, *IMAGE_SHAPE):
        raise DatasetIntegrityError(
            f"unexpected image array: dtype {images.dtype}, shape {images.shape}; "
            f"expected uint8 {(NUM_SAMPLES, *IMAGE_SHAPE)}"
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (NUM_SAMPLES,):
        raise DatasetIntegrityError(
            f"unexpected label array: dtype {labels.dtype}, shape {labels.shape}; "
            f"expected integers of shape ({NUM_SAMPLES},)"
        )
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DatasetIntegrityError(
            f"labels outside [0, {NUM_CLASSES}): min {labels.min()}, max {labels.max()}"
        )
    return images, labels.astype(np.int64, copy=False)


def stratified_split(
    labels: npt.NDArray[np.integer[Any]], fractions: dict[str, float], seed: int
) -> dict[str, npt.NDArray[np.int64]]:
    """Split sample indices into disjoint, class-stratified, shuffled parts.

    Each class is shuffled with a generator seeded by ``seed`` and cut by ``fractions`` (in order;
    the last part takes the rounding remainder). Each part's indices are then shuffled so that the
    classes are interleaved.
    """
    total = sum(fractions.values())
    if not np.isclose(total, 1.0):
        raise ValueError(f"split fractions must sum to 1, got {total}")
    rng = np.random.default_rng(seed)
    names = list(fractions)
    parts: dict[str, list[npt.NDArray[np.int64]]] = {name: [] for name in names}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls)).astype(np.int64)
        start = 0
        for i, name in enumerate(names):
            stop = len(idx) if i == len(names) - 1 else start + round(fractions[name] * len(idx))
            parts[name].append(idx[start:stop])
            start = stop
    return {name: rng.permutation(np.concatenate(chunks)) for name, chunks in parts.items()}


@dataclass(frozen=True)
class _ExistingState:
    complete: bool
    seed: int | None


def _inspect_existing(out_dir: Path) -> _ExistingState:
    meta_path = out_dir / METADATA_FILE
    if not meta_path.is_file():
        return _ExistingState(complete=False, seed=None)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return _ExistingState(complete=False, seed=None)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("name") != DATASET_NAME:
        return _ExistingState(complete=False, seed=None)
    seed = meta.get("seed")
    complete = all((out_dir / f).is_file() and (out_dir / f).stat().st_size > 0 for f in SPLIT_FILES.values())
    return _ExistingState(complete=complete, seed=seed if isinstance(seed, int) else None)


def _metadata(seed: int, sizes: dict[str, int]) -> dict[str, Any]:
    size_text = "/".join(f"{name} {n}" for name, n in sizes.items())
    return {
        "format": FORMAT,
        "task": "classification",
        "name": DATASET_NAME,
        "num_classes": NUM_CLASSES,
        "class_names": list(CLASS_NAMES),
        "input_shape": [1, *IMAGE_SHAPE],
        "splits": dict(SPLIT_FILES),
        "source": (
            f"PyPI package animal-mnist=={PACKAGE_VERSION} (MIT): {DATA_FILE} (sha256 {DATA_SHA256}) and "
            f"{LABEL_FILE} (sha256 {LABEL_SHA256}); 10,000 28x28 grayscale animal silhouettes, 10 classes of "
            f"1,000. Stratified 70/15/15 split with numpy default_rng(seed={seed}) ({size_text}); "
            "pixels scaled to float32 [0, 1]."
        ),
        "seed": seed,
    }


def _write_dataset(
    target: Path, images: npt.NDArray[np.uint8], labels: npt.NDArray[np.int64], seed: int
) -> None:
    splits = stratified_split(labels, SPLIT_FRACTIONS, seed)
    sizes: dict[str, int] = {}
    for name, idx in splits.items():
        x = (images[idx].astype(np.float32) / np.float32(255.0)).reshape(len(idx), 1, *IMAGE_SHAPE)
        y = labels[idx].astype(np.int64)
        np.savez_compressed(target / SPLIT_FILES[name], x=x, y=y)
        sizes[name] = len(idx)
        logger.debug("wrote %s: %d samples, class counts %s", name, len(idx), np.bincount(y).tolist())
    (target / METADATA_FILE).write_text(json.dumps(_metadata(seed, sizes), indent=2) + "\n", encoding="utf-8")


def _install(tmp_dir: Path, out_dir: Path) -> None:
    """Move the finished ``tmp_dir`` to ``out_dir``, replacing an existing dataset there."""
    if out_dir.exists() and any(out_dir.iterdir()):
        backup = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        backup.rmdir()
        os.replace(out_dir, backup)
        try:
            os.replace(tmp_dir, out_dir)
        except BaseException:
            os.replace(backup, out_dir)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    else:
        # os.replace onto an empty (or missing) directory is atomic on POSIX.
        os.replace(tmp_dir, out_dir)


def prepare_animal_mnist(
    out_dir: str | Path,
    seed: int = 0,
    overwrite: bool = False,
    *,
    source_dir: str | Path | None = None,
) -> Path:
    """Write the animal-mnist dataset in ``squeezeflow.npz/v1`` format to ``out_dir``.

    Idempotent: if ``out_dir`` already holds a complete dataset made with the same ``seed``, nothing
    is rewritten (unless ``overwrite``). The files are written to a temporary sibling directory and
    renamed into place, so a crash never leaves a half-written dataset behind.

    Args:
        out_dir: the dataset directory to create.
        seed: seed of the stratified split; recorded in ``dataset.json`` under ``"seed"``.
        overwrite: rebuild even if a dataset is already there (and replace one made with another seed).
        source_dir: directory holding the package's two archives; defaults to the installed package.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        DatasetIntegrityError: a source archive fails its pinned SHA-256 or holds unexpected arrays.
        FileExistsError: ``out_dir`` holds something else (another seed, or foreign files) and
            ``overwrite`` is false.
    """
    out_dir = Path(out_dir)
    existing = _inspect_existing(out_dir)
    if existing.complete and existing.seed == seed and not overwrite:
        logger.info("animal-mnist dataset (seed %d) already at %s; not rewriting", seed, out_dir)
        return out_dir
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"{out_dir} exists and is not a directory")
        contents = {p.name for p in out_dir.iterdir()}
        if contents and not overwrite:
            what = f"a dataset made with seed {existing.seed}" if existing.complete else "other files"
            raise FileExistsError(f"{out_dir} already holds {what}; pass overwrite=True to replace it")
        foreign = sorted(contents - _DATASET_FILES)
        if foreign:
            raise FileExistsError(
                f"{out_dir} holds files that are not part of a dataset ({foreign}); refusing to replace it"
            )

    images, labels = load_raw_arrays(None if source_dir is None else Path(source_dir))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        _write_dataset(tmp_dir, images, labels, seed)
        tmp_dir.chmod(0o755)
        _install(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    logger.info("wrote animal-mnist dataset (seed %d) to %s", seed, out_dir)
    return out_dir
