"""The raw-text face of a promoted Hugging Face text classifier: an ``mlflow.pyfunc.PythonModel`` that
tokenizes texts as ingest did and runs the model's ONNX graph with ONNX Runtime.

This file is the MLflow model's code (MLflow's "models from code": nothing is pickled), with the line
that names its model appended, and runs there on its own, without squeezeflow: it needs only numpy,
pandas, onnxruntime, ``tokenizers`` (or ``transformers``, for a tokenizer that has no
``tokenizer.json``) and mlflow. It must not import squeezeflow.

The model's artifacts: ``onnx_model`` (the promoted ONNX file, the ``onnx`` flavor's too),
``tokenizer`` (the checkpoint's tokenizer as ``save_pretrained`` writes it) and ``config`` (JSON: how
texts are padded and cut, and the class names).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

TEXT_COLUMN = "text"


def texts_of(model_input: Any) -> list[str]:
    """The texts of a DataFrame's ``text`` column (or its only column), a Series, a list or array of
    strings, or one string."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN in model_input.columns:
            column = model_input[TEXT_COLUMN]
        elif len(model_input.columns) == 1:
            column = model_input.iloc[:, 0]
        else:
            raise ValueError(
                f"the input DataFrame has columns {list(model_input.columns)}; give the texts in a "
                f"`{TEXT_COLUMN}` column"
            )
        values = column.tolist()
    elif isinstance(model_input, str):
        values = [model_input]
    elif isinstance(model_input, dict) and TEXT_COLUMN in model_input:
        values = list(np.atleast_1d(model_input[TEXT_COLUMN]))
    else:
        values = list(model_input)
    bad = [v for v in values if not isinstance(v, str)]
    if bad:
        raise ValueError(f"every input must be a text (a string); got {bad[0]!r}")
    return [str(v) for v in values]


def text_tokenizer(folder: Path, config: dict[str, Any]) -> Callable[[Sequence[str]], np.ndarray]:
    """A function from texts to int64 token ids ``[N, max_length]``, padded and cut as ingest did
    (``tokenizer(texts, padding="max_length", truncation=True, max_length=...)``)."""
    length = int(config["max_length"])
    if config.get("fast") and (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok.enable_truncation(max_length=length, direction=str(config.get("truncation_side", "right")))
        tok.enable_padding(
            length=length,
            direction=str(config.get("padding_side", "right")),
            pad_id=int(config["pad_token_id"]),
            pad_type_id=int(config.get("pad_token_type_id", 0)),
            pad_token=str(config.get("pad_token", "")),
        )

        def fast(texts: Sequence[str]) -> np.ndarray:
            if not texts:
                return np.zeros((0, length), dtype=np.int64)
            return np.asarray([e.ids for e in tok.encode_batch(list(texts))], dtype=np.int64)

        return fast

    from transformers import AutoTokenizer

    slow = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)

    def with_transformers(texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, length), dtype=np.int64)
        enc = slow(list(texts), padding="max_length", truncation=True, max_length=length)
        return np.asarray(enc["input_ids"], dtype=np.int64)

    return with_transformers


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


class RawTextClassifier(PythonModel):
    """Texts in; ``label`` (the class name), ``score`` (its probability) and ``label_id`` out, one row
    per text."""

    def load_context(self, context: Any) -> None:
        import onnxruntime as ort

        self.config = json.loads(Path(context.artifacts["config"]).read_text())
        self.labels = [str(n) for n in self.config["labels"]]
        self.tokenize = text_tokenizer(Path(context.artifacts["tokenizer"]), self.config)
        self.session = ort.InferenceSession(
            str(context.artifacts["onnx_model"]), providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]

    # A DataFrame: what MLflow hands over once the signature has checked the input (a list of strings
    # arrives as a one-column frame); a hint MLflow infers no schema from, as the signature is the model's.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        ids = self.tokenize(texts_of(model_input))
        if not len(ids):
            return pd.DataFrame({"label": [], "score": [], "label_id": []})
        # the served graph answers ``scores`` (softmax) beside its logits; a bare graph its logits only
        name = "scores" if "scores" in self.outputs else self.outputs[0]
        (out,) = self.session.run([name], {self.input_name: ids})
        scores = np.asarray(out, dtype=np.float64)
        if name != "scores":
            scores = _softmax(scores)
        best = scores.argmax(axis=1)
        return pd.DataFrame(
            {
                "label": [self.labels[i] for i in best],
                "score": scores[np.arange(len(best)), best],
                "label_id": best.astype(np.int64),
            }
        )
