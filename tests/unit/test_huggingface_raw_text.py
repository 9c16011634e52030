"""Raw-text datasets (``squeezeflow.text/v1``: JSON lines or Parquet splits with ``text`` and ``label``)
with a Hugging Face model source: ingest tokenizes them with the checkpoint's own tokenizer into the
token ids every later stage reads, and refuses each kind of bad text data with its own message (exit
code 2), as it refuses raw text for a model that has no tokenizer."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("transformers", reason="needs the hf extra: pip install -e '.[hf]'")

from squeezeflow.errors import DataValidationError
from squeezeflow.results import IngestResult
from squeezeflow.spec.job import JobSpec
from squeezeflow.stages.context import Settings, StageContext
from squeezeflow.stages.ingest import ingest
from tests.huggingface_checkpoints import (
    LENGTH,
    SPLIT_ROWS,
    TEXTS,
    cli,
    hf_doc,
    reviews,
    save_tiny_bert,
    token_ids,
    write_text_dataset,
    write_text_split,
)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("hf-raw") / "tiny-bert")


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite MLflow store for the module (creating one costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('hf-raw-mlflow') / 'mlflow.db'}"


def _ingest(tmp_path: Path, model: Path, data: Path, tracking: str) -> tuple[IngestResult, StageContext]:
    ctx = StageContext.open(
        Settings.resolve(str(tmp_path / "artifacts"), tracking, tmp_path / "work"), "hf-raw"
    )
    return ingest(JobSpec.model_validate(hf_doc(model, data)), ctx), ctx


@pytest.mark.parametrize("split_format", ["jsonl", "parquet"])
def test_huggingface_raw_text_dataset_is_tokenized_at_ingest_as_the_checkpoints_tokenizer_gives_it(
    tiny_bert: Path, tmp_path: Path, tracking_uri: str, split_format: str
) -> None:
    data = write_text_dataset(tmp_path / "data", split_format=split_format)
    result, ctx = _ingest(tmp_path, tiny_bert, data, tracking_uri)

    info = result.dataset
    assert info.uri == str(data) and info.tokenized is not None
    assert info.input_shape == [LENGTH] and info.input_dtype == "int64"
    assert info.tokenized.max_length == LENGTH and info.tokenized.pad_token_id == 0
    assert info.split_sizes == {"train": 48, "val": 24, "test": 24}
    ds = ctx.job_dataset(info)  # what baseline, optimize and gate read
    texts = [t for t, _ in reviews()]
    labels = [y for _, y in reviews()]
    for split, rows in SPLIT_ROWS:
        np.testing.assert_array_equal(ds.split(split).x, token_ids(tiny_bert, texts[rows], LENGTH))
        np.testing.assert_array_equal(ds.split(split).y, labels[rows])
    assert ds.meta.class_names == ["negative", "positive"]
    assert _ingest(tmp_path, tiny_bert, data, tracking_uri)[0] == result  # ingest again: the recorded result


def test_huggingface_raw_text_without_a_declared_length_is_cut_at_the_tokenizers_capped_maximum(
    tmp_path: Path, tracking_uri: str
) -> None:
    ckpt = save_tiny_bert(tmp_path / "named-bert")
    config = json.loads((ckpt / "config.json").read_text())
    config["id2label"] = {"0": "NEG", "1": "POS"}
    config["label2id"] = {"NEG": 0, "POS": 1}
    (ckpt / "config.json").write_text(json.dumps(config))
    data = write_text_dataset(tmp_path / "data", length=None)
    long_review = " ".join(["a long and winding film"] * 60)  # about 300 tokens
    rows = [{"text": t, "label": y} for t, y in reviews()[:48]]
    rows[0]["text"] = long_review
    write_text_split(data / "train.jsonl", rows)

    result, ctx = _ingest(tmp_path, ckpt, data, tracking_uri)

    # the tokenizer says 512; the tiny checkpoint has 128 positions, and 128 is the cap anyway
    assert result.dataset.tokenized is not None and result.dataset.tokenized.max_length == 128
    assert result.dataset.input_shape == [128]
    assert result.dataset.tokenized.truncated == {"train": 1, "val": 0, "test": 0}
    assert any("1 of the train split's 48 texts are longer than 128" in w for w in result.dataset.warnings)
    ds = ctx.job_dataset(result.dataset)
    np.testing.assert_array_equal(ds.split("train").x[0], token_ids(ckpt, [long_review], 128)[0])
    # the class names the checkpoint's config gives win over the dataset's
    assert ds.meta.class_names == ["NEG", "POS"]


def _rows() -> list[dict[str, Any]]:
    return [{"text": t, "label": y} for t, y in reviews()[72:96]]


def _drop_text(data: Path) -> None:
    write_text_split(data / "test.jsonl", [{"label": r["label"]} for r in _rows()])


def _parquet_without_label(data: Path) -> None:
    meta = json.loads((data / "dataset.json").read_text())
    meta["splits"]["val"] = "val.parquet"
    (data / "dataset.json").write_text(json.dumps(meta))
    write_text_split(data / "val.parquet", [{"text": r["text"]} for r in _rows()])


def _number_as_text(data: Path) -> None:
    rows = _rows()
    rows[3]["text"] = 42
    write_text_split(data / "test.jsonl", rows)


def _empty_text(data: Path) -> None:
    rows = _rows()
    rows[5]["text"] = "   "
    write_text_split(data / "test.jsonl", rows)


def _label_out_of_range(data: Path) -> None:
    rows = _rows()
    rows[2]["label"] = 2
    write_text_split(data / "test.jsonl", rows)


def _label_as_name(data: Path) -> None:
    rows = _rows()
    rows[0]["label"] = "positive"
    write_text_split(data / "test.jsonl", rows)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_drop_text, r"split 'test' \(test\.jsonl\), line 1: the `text` column is missing"),
        (_parquet_without_label, r"split 'val' \(val\.parquet\): the `label` column is missing \(has text\)"),
        (_number_as_text, r"split 'test' \(test\.jsonl\): `text` is not a string in rows 3 \(e\.g\. 42\)"),
        (_empty_text, r"split 'test' \(test\.jsonl\): `text` is empty in rows 5"),
        (_label_out_of_range, r"split 'test' \(test\.jsonl\): `label` is outside \[0, 2\) .* in rows 2"),
        (_label_as_name, r"split 'test' \(test\.jsonl\), row 0: `label` is 'positive'; labels are integer"),
    ],
    ids=["no-text-column", "no-label-column", "number-as-text", "empty-text", "label-3-of-2", "label-name"],
)
def test_huggingface_raw_text_dataset_with_bad_rows_is_refused_at_ingest_with_its_reason(
    tiny_bert: Path, tmp_path: Path, tracking_uri: str, corrupt: Any, message: str
) -> None:
    data = write_text_dataset(tmp_path / "data")
    corrupt(data)

    with pytest.raises(DataValidationError, match=message) as err:
        _ingest(tmp_path, tiny_bert, data, tracking_uri)
    assert err.value.exit_code == 2


def test_raw_text_with_a_model_that_has_no_tokenizer_exits_2_naming_the_huggingface_format(
    tmp_path: Path,
) -> None:
    data = write_text_dataset(tmp_path / "data")
    (tmp_path / "model.onnx").write_bytes(b"not read: the data is refused first")
    doc = hf_doc(tmp_path / "model.onnx", data)
    doc["model"]["format"] = "onnx"
    (tmp_path / "job.yaml").write_text(json.dumps(doc))

    run = cli(
        "run", tmp_path / "job.yaml", "--no-progress",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--artifacts", tmp_path / "artifacts", "--workdir", tmp_path / "work",
        cwd=tmp_path,
    )  # fmt: skip

    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    stderr = " ".join(run.stderr.split())
    assert re.search(
        r"holds raw text \(squeezeflow\.text/v1\).*model\.format 'onnx' has no tokenizer", stderr
    )
    assert "model.format: huggingface" in stderr


_WITHOUT_SQUEEZEFLOW = """
import sys

sys.modules["squeezeflow"] = None  # importing squeezeflow now fails: the model must not need it
import mlflow.pyfunc

model = mlflow.pyfunc.load_model(sys.argv[1])
print(model.predict(sys.argv[2:]).to_json(orient="records"))
"""


@pytest.mark.parametrize("fast", [True, False], ids=["tokenizers", "transformers"])
def test_huggingface_raw_text_pyfunc_loads_without_squeezeflow_and_tokenizes_as_ingest(
    tiny_bert: Path, tmp_path: Path, fast: bool
) -> None:
    """The saved MLflow model (what the registry serves) answers texts in a fresh process that cannot
    import squeezeflow, with the labels of its ONNX graph on the ids ingest's tokenization gives; with
    ``tokenizers`` (a fast tokenizer's tokenizer.json) or, without one, ``transformers``."""
    import subprocess
    import sys

    from mlflow.models import Model

    from squeezeflow.models.huggingface import pack_checkpoint, raw_text_serving
    from squeezeflow.models.sources import export_onnx, load_torch_model
    from squeezeflow.onnx_heads import with_prediction_heads
    from squeezeflow.runtime import predict_logits
    from squeezeflow.spec.load import parse_spec
    from squeezeflow.tracking.models import _RawTextFlavor
    from squeezeflow.tracking.raw_text_pyfunc import text_tokenizer

    archive = pack_checkpoint(str(tiny_bert), tmp_path / "source.tar")
    model = load_torch_model(parse_spec(hf_doc(tiny_bert, tmp_path)).model, archive)
    bare = export_onnx(model, [LENGTH], tmp_path / "bare.onnx", dtype=np.int64)
    served = with_prediction_heads(bare, tmp_path / "served.onnx", ["negative", "positive"])
    serving = raw_text_serving(
        str(tiny_bert),
        archive,
        tmp_path / "tokenizer",
        max_length=LENGTH,
        class_names=["negative", "positive"],
        example_ids=token_ids(tiny_bert)[:2],
    )
    assert serving.example_texts == TEXTS[:2]  # the input example: the token ids decoded
    if not fast:
        serving.config["fast"] = False
    texts = [*TEXTS, " ".join(["a long and winding film"] * 10)]  # the last is cut at LENGTH
    expected = token_ids(tiny_bert, texts, LENGTH)
    np.testing.assert_array_equal(text_tokenizer(serving.tokenizer_dir, serving.config)(texts), expected)

    _RawTextFlavor.save_model(str(tmp_path / "mlflow-model"), Model(), served, serving)
    run = subprocess.run(
        [sys.executable, "-I", "-c", _WITHOUT_SQUEEZEFLOW, str(tmp_path / "mlflow-model"), *texts],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    best = predict_logits(served, expected).argmax(axis=1)
    assert [a["label_id"] for a in answer] == best.tolist()
    assert [a["label"] for a in answer] == [["negative", "positive"][i] for i in best]
