"""Reading and checking datasets in the ``squeezeflow.npz/v1`` format (docs/dataset-format.md).

Structural checks (files, keys, dtypes, shapes) happen here with specific messages; the value checks
(label range, finite inputs, split sizes) run as a Great Expectations suite in the ingest stage.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from squeezeflow.errors import DataValidationError
from squeezeflow.s3 import download_uri

FORMAT = "squeezeflow.npz/v1"
SPLITS = ("train", "val", "test")
SplitName = Literal["train", "val", "test"]
# float32: what a vision/tabular model receives; int64: token ids (>= 0) for a text model's one input.
INPUT_DTYPES = (np.dtype(np.float32), np.dtype(np.int64))


class DatasetMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: Literal["squeezeflow.npz/v1"]
    task: Literal["classification"] = "classification"
    name: str = "dataset"
    num_classes: int = Field(ge=2)
    class_names: list[str] | None = None
    input_shape: list[int] = Field(min_length=1)
    splits: dict[str, str] = Field(default_factory=lambda: {s: f"{s}.npz" for s in SPLITS})
    source: str | None = None


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
    meta = read_meta(meta_path)
    for split in SPLITS:
        name = _safe_member(meta.splits[split])
        download_uri(f"{base}/{name}", dest / name)
    return dest


def read_meta(path: Path) -> DatasetMeta:
    if not path.is_file():
        raise DataValidationError(
            f"{path} is missing: a {FORMAT} dataset needs this descriptor (see docs/dataset-format.md)"
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
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


def _load_split(path: Path, split: str, meta: DatasetMeta) -> Split:
    if not path.is_file():
        raise DataValidationError(f"split {split!r}: file {path.name} is missing")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if keys != {"x", "y"}:
                raise DataValidationError(
                    f"split {split!r} ({path.name}) must hold arrays x and y, has {sorted(keys)}"
                )
            x, y = z["x"], z["y"]
    except DataValidationError:
        raise
    except ValueError as err:
        # numpy says "Object arrays cannot be loaded when allow_pickle=False" for pickled payloads.
        raise DataValidationError(f"split {split!r} ({path.name}) cannot be read safely: {err}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise DataValidationError(
            f"split {split!r} ({path.name}) is not a readable .npz file: {err}"
        ) from None
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


def dataset_sha256(local_dir: Path, meta: DatasetMeta) -> str:
    """SHA-256 over dataset.json and the three split files, in that order."""
    h = hashlib.sha256()
    for name in ["dataset.json", *(meta.splits[s] for s in SPLITS)]:
        with open(local_dir / name, "rb") as f:
            h.update(hashlib.sha256(f.read()).hexdigest().encode())
    return h.hexdigest()


def load_dataset(local_dir: Path) -> Dataset:
    """Read and structurally check a local dataset directory."""
    meta = read_meta(local_dir / "dataset.json")
    splits = {s: _load_split(local_dir / _safe_member(meta.splits[s]), s, meta) for s in SPLITS}
    return Dataset(meta=meta, splits=splits, sha256=dataset_sha256(local_dir, meta), local_dir=local_dir)
