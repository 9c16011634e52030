"""Reading and checking datasets in the ``squeezeflow.npz/v1`` format (docs/dataset-format.md).

Structural checks (files, keys, dtypes, shapes) happen here with specific messages; the value checks
(label range, finite inputs, split sizes) run as a Great Expectations suite in the ingest stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from squeezeflow.errors import DataValidationError
from squeezeflow.store.s3 import download_uri

log = logging.getLogger(__name__)

FORMAT = "squeezeflow.npz/v1"
# Raw texts and labels, tokenized at ingest with a Hugging Face model's tokenizer (squeezeflow.text_data).
TEXT_FORMAT = "squeezeflow.text/v1"
SPLITS = ("train", "val", "test")
SplitName = Literal["train", "val", "test"]
# float32: what a vision/tabular model receives; int64: token ids (>= 0) for a text model's one input.
INPUT_DTYPES = (np.dtype(np.float32), np.dtype(np.int64))
# Bounds on what a dataset's descriptor may ask for, checked before anything is allocated: far above any
# real classification dataset (ImageNet-21k has 21,841 classes), far below what exhausts memory.
MAX_CLASSES = 100_000
MAX_SAMPLE_VALUES = 1 << 26
MAX_DESCRIPTOR_BYTES = 1 << 20
# Deflate cannot compress by more than about 1032:1; a member that claims more is a zip bomb.
_MAX_DEFLATE_RATIO = 1100


class DatasetMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: Literal["squeezeflow.npz/v1"]
    task: Literal["classification"] = "classification"
    name: str = "dataset"
    num_classes: int = Field(ge=2, le=MAX_CLASSES)
    class_names: list[str] | None = Field(default=None, max_length=MAX_CLASSES)
    input_shape: list[Annotated[int, Field(ge=1, le=MAX_SAMPLE_VALUES)]] = Field(min_length=1, max_length=8)
    splits: dict[str, str] = Field(default_factory=lambda: {s: f"{s}.npz" for s in SPLITS})
    source: str | None = None

    @model_validator(mode="after")
    def _bounded(self) -> DatasetMeta:
        values = math.prod(self.input_shape)
        if values > MAX_SAMPLE_VALUES:
            raise ValueError(
                f"input_shape {self.input_shape} is {values:,} values per sample; at most "
                f"{MAX_SAMPLE_VALUES:,} are supported"
            )
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names for num_classes {self.num_classes}"
            )
        return self


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Dataset:
    meta: DatasetMeta
    splits: dict[str, Split]
    sha256: str
    local_dir: Path
    warnings: list[str] = field(default_factory=list)

    def split(self, name: str) -> Split:
        return self.splits[name]


def _safe_member(name: str) -> str:
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        raise DataValidationError(
            f"dataset.json names split file {name!r}: only plain file names are allowed"
        )
    return name


def fetch_dataset(uri: str, cache_dir: Path) -> Path:
    """A local directory holding the dataset at ``uri`` (a directory, or an s3:// prefix downloaded)."""
    if not uri.startswith("s3://"):
        p = Path(uri)
        if not p.is_dir():
            raise DataValidationError(f"dataset directory {uri} does not exist")
        return p
    base = uri.rstrip("/")
    dest = cache_dir / "datasets" / hashlib.sha256(base.encode()).hexdigest()[:16]
    meta_path = download_uri(f"{base}/dataset.json", dest / "dataset.json")
    for name in _split_files(meta_path).values():
        download_uri(f"{base}/{_safe_member(name)}", dest / name)
    return dest


def _split_files(meta_path: Path) -> dict[str, str]:
    """The split files a dataset.json names: a token-id dataset's (checked by `read_meta`), or a raw-text
    dataset's (``squeezeflow.text/v1``, checked when ingest reads it)."""
    doc: object = None
    if meta_path.is_file() and meta_path.stat().st_size <= MAX_DESCRIPTOR_BYTES:
        try:
            doc = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            doc = None
    if isinstance(doc, dict) and doc.get("format") == TEXT_FORMAT:
        splits = doc.get("splits") or {s: f"{s}.jsonl" for s in SPLITS}
        if not isinstance(splits, dict) or any(not isinstance(splits.get(s), str) for s in SPLITS):
            raise DataValidationError(f"{meta_path}: `splits` must name a file for train, val and test")
        return {s: str(splits[s]) for s in SPLITS}
    meta = read_meta(meta_path)
    return {s: meta.splits[s] for s in SPLITS}


def read_meta(path: Path) -> DatasetMeta:
    if not path.is_file():
        raise DataValidationError(
            f"{path} is missing: a {FORMAT} dataset needs this descriptor (see docs/dataset-format.md)"
        )
    size = path.stat().st_size
    if size > MAX_DESCRIPTOR_BYTES:
        raise DataValidationError(
            f"{path} is {size:,} bytes; a dataset descriptor is at most {MAX_DESCRIPTOR_BYTES:,} bytes"
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataValidationError(f"{path} is not readable JSON: {err}") from None
    try:
        meta = DatasetMeta.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise DataValidationError(f"{path} is not a {FORMAT} descriptor: {problems}") from None
    missing = [s for s in SPLITS if s not in meta.splits]
    if missing:
        raise DataValidationError(f"{path}: splits {missing} are missing (need train, val and test)")
    return meta


def _available_bytes() -> int:
    """Physical memory of this machine (or container limit, where the OS reports it)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def _read_npz(path: Path, split: str) -> dict[str, np.ndarray]:
    """The arrays of a split's ``.npz``, after checking what each member's header declares against the
    bytes the file really holds, so a small file cannot ask for terabytes; never unpickles."""
    where = f"split {split!r} ({path.name})"
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            start = f.read(16)
        raise DataValidationError(
            f"{where} is not an .npz archive (a zip of .npy arrays, as numpy.savez writes): it starts "
            f"with {start!r}"
        )
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename.removesuffix(".npy"): i for i in zf.infolist()}
        if set(infos) != {"x", "y"}:
            raise DataValidationError(f"{where} must hold arrays x and y, has {sorted(infos)}")
        declared_total = 0
        for key, info in infos.items():
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(f)
                header = f.tell()
            if dtype.hasobject:
                raise DataValidationError(
                    f"{where} cannot be read safely: Object arrays cannot be loaded when "
                    f"allow_pickle=False ({key} holds pickled Python objects; squeezeflow never unpickles)"
                )
            declared = math.prod(shape) * dtype.itemsize
            if declared != info.file_size - header:
                raise DataValidationError(
                    f"{where}: the header of {key} declares shape {tuple(shape)} of {dtype} "
                    f"({declared:,} bytes), but the member holds {max(info.file_size - header, 0):,} bytes"
                )
            if info.compress_type != zipfile.ZIP_STORED and info.file_size > _MAX_DEFLATE_RATIO * max(
                info.compress_size, 1
            ):
                raise DataValidationError(
                    f"{where}: {key} claims to expand from {info.compress_size:,} to {info.file_size:,} "
                    "bytes, more than compression can achieve (a zip bomb)"
                )
            declared_total += declared
        if declared_total > _available_bytes() // 2:
            raise DataValidationError(
                f"{where} holds {declared_total:,} bytes of arrays, more than half of this machine's "
                f"memory ({_available_bytes():,} bytes); use a subset or a machine with more memory"
            )
        for key, info in infos.items():
            with zf.open(info) as f:
                arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
    return arrays


def _load_split(path: Path, split: str, meta: DatasetMeta) -> Split:
    if not path.is_file():
        raise DataValidationError(f"split {split!r}: file {path.name} is missing")
    try:
        arrays = _read_npz(path, split)
    except DataValidationError:
        raise
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:
        raise DataValidationError(
            f"split {split!r} ({path.name}) is not a readable .npz file: {err}"
        ) from None
    x, y = arrays["x"], arrays["y"]
    if x.dtype not in INPUT_DTYPES:
        raise DataValidationError(
            f"split {split!r}: x must be float32 (features, pixels) or int64 (token ids), got {x.dtype}"
        )
    if x.dtype == np.int64 and x.size and int(x.min()) < 0:
        raise DataValidationError(
            f"split {split!r}: x holds int64 token ids, which must be >= 0; found {int(x.min())}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise DataValidationError(f"split {split!r}: y must be integer labels, got {y.dtype}")
    if y.ndim != 1:
        raise DataValidationError(f"split {split!r}: y must be 1-D, got shape {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataValidationError(
            f"split {split!r}: x has {x.shape[0]} samples but y has {y.shape[0]} labels"
        )
    if list(x.shape[1:]) != list(meta.input_shape):
        raise DataValidationError(
            f"split {split!r}: samples have shape {list(x.shape[1:])}, dataset.json says {meta.input_shape}"
        )
    return Split(x=x, y=y.astype(np.int64))


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _combined_sha256(file_digests: list[str]) -> str:
    h = hashlib.sha256()
    for digest in file_digests:
        h.update(digest.encode())
    return h.hexdigest()


# A test split with at least this share of its rows also in train or val gets a warning.
OVERLAP_WARNING = 0.05


def _check_distinct_files(meta: DatasetMeta) -> None:
    seen: dict[str, str] = {}
    for split in SPLITS:
        name = meta.splits[split]
        if name in seen:
            raise DataValidationError(
                f"dataset.json names {name!r} for both splits {seen[name]!r} and {split!r}: the test split "
                "must be data the model was not trained, calibrated or tuned on; give each split its own file"
            )
        seen[name] = split


def _check_distinct_contents(meta: DatasetMeta, digests: dict[str, str]) -> None:
    seen: dict[str, str] = {}
    for split in SPLITS:
        first = seen.get(digests[split])
        if first is not None:
            raise DataValidationError(
                f"splits {first!r} ({meta.splits[first]}) and {split!r} ({meta.splits[split]}) hold the same "
                "data (same SHA-256): the gate would judge candidates on data they were calibrated or "
                "fine-tuned on; give each split its own samples"
            )
        seen[digests[split]] = split


def _row_digests(x: np.ndarray) -> set[bytes]:
    rows = np.ascontiguousarray(x).reshape(len(x), -1)
    return {hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows}


def overlap_warnings(splits: dict[str, Split]) -> list[str]:
    """A warning for each of train and val that shares ``OVERLAP_WARNING`` or more of the test split's
    rows (identical inputs), saying how many."""
    test = splits["test"].x
    if not len(test):
        return []
    test_rows = [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in test.reshape(len(test), -1)]
    out = []
    for other in ("train", "val"):
        seen = _row_digests(splits[other].x)
        shared = sum(d in seen for d in test_rows)
        if shared / len(test_rows) >= OVERLAP_WARNING:
            out.append(
                f"{shared} of the test split's {len(test_rows)} samples ({shared / len(test_rows):.1%}) also "
                f"appear in the {other} split: the gate's verdict on them says little about unseen data"
            )
    return out


def load_dataset(local_dir: Path) -> Dataset:
    """Read and structurally check a local dataset directory. Refuses splits that are the same file or
    the same data; warns (``Dataset.warnings``, and the log) when test samples also appear in train or
    val."""
    meta = read_meta(local_dir / "dataset.json")
    _check_distinct_files(meta)
    files = {s: local_dir / _safe_member(meta.splits[s]) for s in SPLITS}
    splits = {s: _load_split(files[s], s, meta) for s in SPLITS}
    digests = {s: _file_sha256(files[s]) for s in SPLITS}
    _check_distinct_contents(meta, digests)
    warnings = overlap_warnings(splits)
    for warning in warnings:
        log.warning("dataset %s: %s", local_dir, warning)
    sha = _combined_sha256([_file_sha256(local_dir / "dataset.json"), *(digests[s] for s in SPLITS)])
    return Dataset(meta=meta, splits=splits, sha256=sha, local_dir=local_dir, warnings=warnings)
