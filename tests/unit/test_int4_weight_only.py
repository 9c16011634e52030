"""Weight-only int4 (ONNX Runtime's MatMulNBits) on a transformer classifier: what it converts, what it
leaves, what it gives, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from squeezeflow.errors import PassError
from squeezeflow.models.sources import export_onnx
from squeezeflow.passes import ModelState, PassContext, get_pass
from squeezeflow.runtime import predict_logits
from squeezeflow.search.space import recipe_from_params
from squeezeflow.spec.search import SearchSpace
from squeezeflow.zoo.cnn import tiny_cnn
from squeezeflow.zoo.minilm import EncoderConfig, MiniLMClassifier

SEQ = 16


def _ctx(tmp_path: Path, x: np.ndarray) -> PassContext:
    y = np.zeros(len(x), dtype=np.int64)
    return PassContext(
        workdir=tmp_path, input_shape=list(x.shape[1:]), train_x=x, train_y=y, val_x=x, val_y=y
    )


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.fixture(scope="module")
def text_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    torch.manual_seed(0)
    cfg = EncoderConfig(
        vocab_size=200, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256, dropout=0.0
    )
    model = MiniLMClassifier(cfg, num_classes=2).eval()
    ids = np.random.default_rng(0).integers(1, 200, (8, SEQ)).astype(np.int64)
    path = export_onnx(model, [SEQ], tmp_path_factory.mktemp("int4") / "text.onnx", dtype=np.int64)
    return path, ids


def test_int4_turns_every_weight_matmul_into_matmulnbits_and_keeps_the_answers(
    text_onnx: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, ids = text_onnx
    cls = get_pass("ort_int4_weight_only")
    ctx = _ctx(tmp_path, ids)
    out = cls().run(ModelState(onnx_path=path), cls.Config(block_size=32), ctx).onnx_path
    assert out is not None
    ops = _ops(out)
    # 2 layers x (q, k, v, output, FFN in, FFN out) = 12 weight MatMuls; the attention score MatMuls
    # (two activations) stay float.
    assert ops.count("MatMulNBits") == 12 == ctx.notes["int4"]["matmuls_int4"]
    assert out.stat().st_size < 0.6 * path.stat().st_size
    before, after = predict_logits(path, ids), predict_logits(out, ids)
    assert np.abs(after - before).max() < 0.05 * np.abs(before).max() + 1e-3


def test_the_searchs_int4_choice_gives_token_id_models_int4_linears_then_int8_for_the_rest() -> None:
    space = SearchSpace(quantize=["int4"])
    params = {
        "prune_ratio": 0.0,
        "importance": "magnitude",
        "round_to": 1,
        "distill": True,
        "quantize": "int4",
    }
    text = recipe_from_params(params, space, token_ids=True)
    assert [s.name for s in text.steps][-2:] == ["ort_int4_weight_only", "ort_dynamic_int8"]
    assert text.label.endswith("int4-int8dyn")
    image = recipe_from_params(params, space, token_ids=False)
    assert "ort_int4_weight_only" not in [s.name for s in image.steps]  # no int4 convolution kernels


def test_the_search_asks_an_int4_block_size_only_of_int4_trials_and_builds_with_it(tmp_path: Path) -> None:
    import optuna

    from squeezeflow.search.space import suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace(quantize=["int4", "int8"], int4_block_size=[64, 128])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    asked = [suggest(study.ask(), space) for _ in range(24)]
    int4 = [p for p in asked if p["quantize"] == "int4"]
    assert int4 and all(p["int4_block_size"] in (64, 128) for p in int4)
    assert all("int4_block_size" not in p for p in asked if p["quantize"] != "int4")
    params = {**int4[0], "int4_block_size": 128}
    recipe = recipe_from_params(params, space, token_ids=True)
    (step,) = [s for s in recipe.steps if s.name == "ort_int4_weight_only"]
    assert step.params == {"block_size": 128} and "int4b128" in recipe.label
    assert "int4b" not in recipe_from_params({**params, "int4_block_size": 32}, space, token_ids=True).label


def test_int4_refuses_a_model_without_matmul_naming_the_pass(tmp_path: Path) -> None:
    cnn = export_onnx(tiny_cnn().eval(), [1, 28, 28], tmp_path / "cnn.onnx")
    cls = get_pass("ort_int4_weight_only")
    x = np.zeros((2, 1, 28, 28), dtype=np.float32)
    with pytest.raises(PassError, match=r"ort_int4_weight_only.*no MatMul"):
        cls().run(ModelState(onnx_path=cnn), cls.Config(), _ctx(tmp_path, x))
