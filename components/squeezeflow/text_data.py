"""Raw-text datasets (``squeezeflow.text/v1``): splits of texts and labels that ingest tokenizes with a
Hugging Face model's own tokenizer into the ``squeezeflow.npz/v1`` token-id form the engine uses
(docs/dataset-format.md).

A split is JSON lines (``.jsonl``: one object per line) or Parquet (``.parquet``, read with pyarrow) with
a ``text`` column (strings) and a ``label`` column (integers in ``[0, num_classes)``). Nothing is ever
unpickled: JSON lines are parsed with ``json``, Parquet's columns are read as Arrow arrays. The
structural checks (files, columns, label type) raise here with specific messages; the value checks
(strings, non-empty texts, label range, every class in train) run as a Great Expectations suite in the
ingest stage, as for token-id datasets.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from squeezeflow.data import MAX_CLASSES, MAX_DESCRIPTOR_BYTES, SPLITS, TEXT_FORMAT
from squeezeflow.errors import DataValidationError

__all__ = ["TEXT_FORMAT", "TextDataset", "TextDatasetMeta", "load_text_dataset"]
TEXT_SUFFIXES = (".jsonl", ".parquet")
# Without a declared length: the tokenizer's model_max_length, but never more than this (a model's
# 512 or "unbounded" would make every sample long and every candidate slow for short texts).
DEFAULT_MAX_LENGTH = 128
# A split file larger than this is refused before it is read (the texts are held in memory).
MAX_SPLIT_BYTES = 1 << 31


class TextDatasetMeta(BaseModel):
    """``dataset.json`` of a raw-text dataset."""

    model_config = ConfigDict(extra="allow")

    format: Literal["squeezeflow.text/v1"]
    task: Literal["classification"] = "classification"
    name: str = "dataset"
    num_classes: int = Field(ge=2, le=MAX_CLASSES)
    class_names: list[str] | None = Field(default=None, max_length=MAX_CLASSES)
    # As a token-id dataset declares its length: ``[max_length]``, the token ids each text becomes.
    input_shape: list[int] | None = Field(default=None, min_length=1, max_length=1)
    splits: dict[str, str] = Field(default_factory=lambda: {s: f"{s}.jsonl" for s in SPLITS})
    source: str | None = None

    @property
    def max_length(self) -> int | None:
        return self.input_shape[0] if self.input_shape else None


@dataclass
class TextSplit:
    """A split's columns as read: ``text`` and ``label`` values as they were in the file (checked by
    the Great Expectations suite, not coerced)."""

    text: list[Any]
    label: list[Any]

    def __len__(self) -> int:
        return len(self.label)


@dataclass
class TextDataset:
    meta: TextDatasetMeta
    splits: dict[str, TextSplit]
    sha256: str
    local_dir: Path
    warnings: list[str] = field(default_factory=list)


def descriptor_format(local_dir: Path) -> str | None:
    """The ``format`` a dataset directory's ``dataset.json`` declares (None where it cannot be read:
    the npz reader then says what is wrong)."""
    path = local_dir / "dataset.json"
    try:
        if path.stat().st_size > MAX_DESCRIPTOR_BYTES:
            return None
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    return fmt if isinstance(fmt, str) else None


def read_text_meta(path: Path) -> TextDatasetMeta:
    try:
        raw = json.loads(path.read_text())
        meta = TextDatasetMeta.model_validate(raw)
    except (OSError, ValueError) as err:
        if isinstance(err, ValidationError):
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise DataValidationError(f"{path} is not a {TEXT_FORMAT} descriptor: {problems}") from None
        raise DataValidationError(f"{path} is not readable JSON: {err}") from None
    missing = [s for s in SPLITS if s not in meta.splits]
    if missing:
        raise DataValidationError(f"{path}: splits {missing} are missing (need train, val and test)")
    for split in SPLITS:
        name = meta.splits[split]
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise DataValidationError(
                f"dataset.json names split file {name!r}: only plain file names are allowed"
            )
        if not name.endswith(TEXT_SUFFIXES):
            raise DataValidationError(
                f"split {split!r}: {name} is neither JSON lines (.jsonl) nor Parquet (.parquet); a "
                f"{TEXT_FORMAT} split is one of them, with a `text` and a `label` column"
            )
    return meta


def _read_jsonl(path: Path, where: str) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {"text": [], "label": []}
    with path.open("rb") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise DataValidationError(f"{where}, line {n}: not a JSON object: {err}") from None
            if not isinstance(row, dict):
                raise DataValidationError(
                    f"{where}, line {n}: each line must be a JSON object with `text` and `label`, got "
                    f"{type(row).__name__}"
                )
            for column in ("text", "label"):
                if column not in row:
                    raise DataValidationError(
                        f"{where}, line {n}: the `{column}` column is missing (a {TEXT_FORMAT} split needs "
                        "`text`, a string, and `label`, an integer class index, on every line)"
                    )
                columns[column].append(row[column])
    return columns


def _read_parquet(path: Path, where: str) -> dict[str, list[Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataValidationError(
            f"{where} is Parquet, which needs pyarrow: pip install pyarrow (or write the split as JSON lines)"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ... for a file it cannot read
        raise DataValidationError(f"{where} is not a readable Parquet file: {err}") from None
    missing = [c for c in ("text", "label") if c not in table.column_names]
    if missing:
        raise DataValidationError(
            f"{where}: the {', '.join(f'`{c}`' for c in missing)} column is missing (has "
            f"{', '.join(table.column_names) or 'none'}); a {TEXT_FORMAT} split needs `text` (strings) and "
            "`label` (integer class indices)"
        )
    return {c: table.column(c).to_pylist() for c in ("text", "label")}


def _check_labels(labels: list[Any], where: str) -> None:
    for i, v in enumerate(labels):
        if v is None:
            continue  # a missing label: reported by the suite (not null)
        if isinstance(v, bool) or not (
            isinstance(v, int) or (isinstance(v, float) and math.isfinite(v) and v.is_integer())
        ):
            raise DataValidationError(
                f"{where}, row {i}: `label` is {v!r}; labels are integer class indices in [0, num_classes) "
                "(map class names to indices and list the names in dataset.json `class_names`)"
            )


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_text_dataset(local_dir: Path) -> TextDataset:
    """Read a raw-text dataset directory and check its structure (files, columns, integer labels)."""
    meta = read_text_meta(local_dir / "dataset.json")
    names = [meta.splits[s] for s in SPLITS]
    if len(set(names)) != len(names):
        raise DataValidationError(
            f"dataset.json names the same file for two splits ({', '.join(names)}): the test split must be "
            "data the model was not trained, calibrated or tuned on"
        )
    splits: dict[str, TextSplit] = {}
    digests = []
    for split in SPLITS:
        path = local_dir / meta.splits[split]
        where = f"split {split!r} ({path.name})"
        if not path.is_file():
            raise DataValidationError(f"{where}: the file is missing")
        if path.stat().st_size > MAX_SPLIT_BYTES:
            raise DataValidationError(
                f"{where} is {path.stat().st_size:,} bytes; at most {MAX_SPLIT_BYTES:,}"
            )
        columns = _read_jsonl(path, where) if path.suffix == ".jsonl" else _read_parquet(path, where)
        _check_labels(columns["label"], where)
        splits[split] = TextSplit(text=columns["text"], label=columns["label"])
        digests.append(_file_sha256(path))
    if len(set(digests)) != len(digests):
        raise DataValidationError(
            "two splits hold the same data (same SHA-256): the gate would judge candidates on data they "
            "were calibrated or fine-tuned on; give each split its own texts"
        )
    h = hashlib.sha256()
    for digest in (_file_sha256(local_dir / "dataset.json"), *digests):
        h.update(digest.encode())
    return TextDataset(meta=meta, splits=splits, sha256=h.hexdigest(), local_dir=local_dir)


def text_frame(split: TextSplit) -> Any:
    """The columns the Great Expectations suite checks: the label, whether the text is a string, and
    its length without surrounding whitespace (missing for a non-string)."""
    import pandas as pd

    is_str = [isinstance(t, str) for t in split.text]
    return pd.DataFrame(
        {
            "label": np.array([np.nan if v is None else float(v) for v in split.label], dtype=np.float64),
            "text_is_string": is_str,
            "text_chars": [len(t.strip()) if s else np.nan for t, s in zip(split.text, is_str, strict=True)],
        }
    )


def text_problems(ds: TextDataset) -> list[str]:
    """What is wrong with the values, in the user's words, each with the first offending rows (what
    the suite's failed expectations mean; computed here to name the rows)."""
    out = []
    k = ds.meta.num_classes
    for split in SPLITS:
        s = ds.splits[split]
        where = f"split {split!r} ({ds.meta.splits[split]})"

        def rows(bad: list[int]) -> str:
            return ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")

        if not len(s):
            out.append(f"{where} has no rows")
            continue
        not_str = [i for i, t in enumerate(s.text) if not isinstance(t, str)]
        if not_str:
            out.append(
                f"{where}: `text` is not a string in rows {rows(not_str)} (e.g. {s.text[not_str[0]]!r})"
            )
        empty = [i for i, t in enumerate(s.text) if isinstance(t, str) and not t.strip()]
        if empty:
            out.append(f"{where}: `text` is empty in rows {rows(empty)}")
        missing = [i for i, v in enumerate(s.label) if v is None]
        if missing:
            out.append(f"{where}: `label` is missing in rows {rows(missing)}")
        outside = [i for i, v in enumerate(s.label) if v is not None and not 0 <= v < k]
        if outside:
            out.append(
                f"{where}: `label` is outside [0, {k}) (num_classes {k}) in rows {rows(outside)} "
                f"(e.g. {s.label[outside[0]]!r})"
            )
        if split == "train":
            absent = sorted(set(range(k)) - {int(v) for v in s.label if v is not None})
            if absent:
                out.append(f"{where}: classes {absent} have no training rows; every class must be there")
    return out


def write_token_dataset(
    ds: TextDataset,
    ids: dict[str, np.ndarray],
    dest: Path,
    *,
    class_names: list[str] | None,
    pad_token_id: int,
    tokenizer_of: str,
) -> Path:
    """Write the tokenized splits (``ids[split]``: int64 ``[N, max_length]``) as a squeezeflow.npz/v1
    dataset directory ``dest`` (returned)."""
    dest.mkdir(parents=True, exist_ok=True)
    length = next(iter(ids.values())).shape[1]
    meta = {
        "format": "squeezeflow.npz/v1",
        "task": "classification",
        "name": ds.meta.name,
        "num_classes": ds.meta.num_classes,
        "class_names": class_names,
        "input_shape": [length],
        "splits": {s: f"{s}.npz" for s in SPLITS},
        "source": f"{TEXT_FORMAT} dataset {ds.meta.name!r} ({ds.sha256[:12]}) tokenized with the tokenizer "
        f"of {tokenizer_of}",
        "tokenizer": {"pad_token_id": pad_token_id, "max_length": length},
    }
    (dest / "dataset.json").write_text(json.dumps(meta, indent=1))
    for split in SPLITS:
        labels = np.asarray([int(v) for v in ds.splits[split].label], dtype=np.int64)
        with open(dest / f"{split}.npz", "wb") as f:
            np.savez(f, x=ids[split].astype(np.int64), y=labels)
    return dest
