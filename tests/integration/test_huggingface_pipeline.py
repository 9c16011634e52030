"""A Hugging Face checkpoint through ``squeezeflow run``: a small BertForSequenceClassification directory
(``model.format: huggingface``, 2 layers, 128 wide) on short raw-text reviews that ingest tokenizes with
its own tokenizer to 64 ids, tracked on the session's MLflow server. The baseline is exported and
evaluated; the padding-trimmed dynamic-int8 candidate is built, gated, benchmarked and promoted as an
int64-input ONNX model whose registered version answers raw text through ``mlflow.pyfunc``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="needs the hf extra: pip install -e '.[hf]'")

import onnx
from mlflow import MlflowClient

from squeezeflow.errors import ModelLoadError
from squeezeflow.models.huggingface import load_huggingface_model, pack_checkpoint
from squeezeflow.results import CandidateResult
from squeezeflow.store.artifacts import open_store
from tests.huggingface_checkpoints import TEXTS, cli, hf_doc, save_tiny_bert, token_ids, write_text_dataset
from tests.servers import MlflowServer, S3Endpoint

pytestmark = pytest.mark.integration
INT8 = {"name": "ort_dynamic_int8", "params": {"per_channel": True}}


def test_huggingface_directory_on_raw_text_compresses_and_its_registered_pyfunc_answers_raw_text(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    # wide and long enough that trimming the padding and int8 make it measurably faster
    ckpt = save_tiny_bert(tmp_path / "small-bert", hidden=128)
    data = write_text_dataset(tmp_path / "data", split_format="parquet", length=64)
    doc = hf_doc(ckpt, data, name="hf-run")
    doc["tolerance"] = {"mode": "absolute", "max_drop": 0.05}
    doc["devices"] = [{"name": "cpu-1t", "intra_op_threads": 1, "warmup": 5, "iterations": 30}]
    doc["search"] = {
        "recipes": [{"name": "trim-int8", "steps": [{"name": "trim_padding"}, INT8]}],
        "max_trials": 1,
        "seed": 0,
    }
    (tmp_path / "job.yaml").write_text(json.dumps(doc))

    proc = cli(
        "run", tmp_path / "job.yaml", "--no-progress", "--tracking-uri", mlflow_server.tracking_uri,
        "--artifacts", tmp_path / "artifacts", "--workdir", tmp_path / "work",
        "--result", tmp_path / "result.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert 0.0 <= result["baseline_metric"] <= 1.0
    (row,) = result["candidates"]
    assert row["label"] == "trim-int8" and row["status"] == "ok" and row["gate"] == "pass", row
    assert row["size_bytes"] < 0.5 * result["baseline_size_bytes"]  # int8 weights, embeddings included
    promotion = result["promotion"]
    assert promotion["promoted"] and promotion["candidate_label"] == "trim-int8", promotion

    store = open_store(tmp_path / "artifacts")
    record = store.read_record("optimize", row["candidate_key"])
    assert record is not None
    candidate = CandidateResult.model_validate(record)
    assert candidate.notes["trim_padding"]["max_relative_difference"] < 1e-4
    assert candidate.onnx is not None
    graph = onnx.load(str(store.fetch(candidate.onnx, tmp_path / "fetched"))).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64

    client = MlflowClient(mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri)
    run = client.get_run(result["parent_run_id"])
    assert run.data.params["model.format"] == "huggingface"
    assert run.data.params["model.uri"] == str(ckpt)
    assert client.get_model_version_by_alias("hf-run-model", "champion").version == promotion["version"]

    # the registered version answers raw text: tokenized as ingest did, run on the promoted ONNX file
    import mlflow
    import pandas as pd

    from squeezeflow.runtime import predict_logits

    texts = [*TEXTS, " ".join(["a long, slow and tedious story"] * 20)]  # the last is cut at 64 ids
    mlflow.set_tracking_uri(mlflow_server.tracking_uri)
    mlflow.set_registry_uri(mlflow_server.tracking_uri)  # an in-process job earlier may have set another
    served = mlflow.pyfunc.load_model("models:/hf-run-model@champion")
    answer = served.predict(pd.DataFrame({"text": texts}))
    assert list(answer.columns) == ["label", "score", "label_id"] and len(answer) == len(texts)
    logits = predict_logits(store.fetch(candidate.onnx, tmp_path / "fetched"), token_ids(ckpt, texts, 64))
    assert answer["label_id"].tolist() == logits.argmax(axis=1).tolist()
    assert answer["label"].tolist() == [["negative", "positive"][i] for i in logits.argmax(axis=1)]
    assert ((answer["score"] >= 0.5) & (answer["score"] <= 1.0)).all()
    pd.testing.assert_frame_equal(served.predict(texts), answer)  # a list of strings answers the same


def test_huggingface_checkpoint_from_an_s3_prefix_carries_only_its_safe_files(
    tmp_path: Path, s3_bucket: str, s3_env: S3Endpoint
) -> None:
    import tarfile

    import torch

    ckpt = save_tiny_bert(tmp_path / "tiny-bert")
    client = s3_env.client()
    for f in ckpt.iterdir():
        client.upload_file(str(f), s3_bucket, f"models/tiny/{f.name}")
    # beside it: a pickle, the checkpoint's own code, a sentence-transformers subfolder; none travels
    for name in ("pytorch_model.bin", "modeling_bert.py", "1_Pooling/config.json"):
        client.put_object(Bucket=s3_bucket, Key=f"models/tiny/{name}", Body=b"not loaded")
    uri = f"s3://{s3_bucket}/models/tiny"

    archive = pack_checkpoint(uri, tmp_path / "packed.tar")
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == sorted(p.name for p in ckpt.iterdir())
    ids = torch.from_numpy(token_ids(ckpt))
    with torch.inference_mode():
        torch.testing.assert_close(
            load_huggingface_model(uri, archive)(ids), load_huggingface_model(str(ckpt), ckpt)(ids)
        )

    client.delete_object(Bucket=s3_bucket, Key="models/tiny/model.safetensors")
    with pytest.raises(ModelLoadError, match=r"has its weights only as pytorch_model\.bin, a pickle"):
        pack_checkpoint(uri, tmp_path / "refused.tar")
