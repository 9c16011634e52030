"""Hidden-state distillation: a recovery that matches the student's block outputs to the baseline's at the
blocks depth pruning kept, and the text recipe that drops half the layers and recovers with it."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from squeezeflow.errors import PassError
from squeezeflow.models.sources import export_onnx
from squeezeflow.passes import ModelState, PassContext, describe_passes, get_pass, validate_steps
from squeezeflow.passes.skipped_block import SkippedBlock
from squeezeflow.runtime import predict_logits
from squeezeflow.search.recipes import TEXT_DEPTH_RECIPE
from squeezeflow.training import HiddenStates, accuracy, finetune
from squeezeflow.zoo.cnn import ResNet
from squeezeflow.zoo.minilm import EncoderConfig, EncoderLayer, MiniLMClassifier

LAYERS = 4


def reviews(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids 1..199 (BERT's special ids 100-103 among them), padded after 6-16 tokens; the label says
    whether most tokens are in the upper half of the vocabulary."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 200, (n, 16)).astype(np.int64)
    for row, length in zip(ids, rng.integers(6, 17, n), strict=True):
        row[length:] = 0
    upper = ((ids >= 100) & (ids > 0)).sum(1) > ((ids < 100) & (ids > 0)).sum(1)
    return ids, upper.astype(np.int64)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Models this small train fastest on one thread (several times faster on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained() -> tuple[MiniLMClassifier, tuple[np.ndarray, ...]]:
    """A 4-layer tiny MiniLM classifier trained on its task (about 5 s on one core), and the data."""
    torch.manual_seed(0)
    config = EncoderConfig(
        vocab_size=200, hidden_size=32, num_layers=LAYERS, num_heads=4, intermediate_size=64, max_positions=16
    )
    model = MiniLMClassifier(config, num_classes=2)
    x, y = reviews(512, 0)
    vx, vy = reviews(128, 1)
    finetune(model, x, y, vx, vy, epochs=4, lr=3e-3, batch_size=32, seed=0)
    return model.eval(), (x, y, vx, vy)


def ctx_for(tmp: Path, data: tuple[np.ndarray, ...], teacher: object = None) -> PassContext:
    x, y, vx, vy = data
    return PassContext(
        workdir=tmp, input_shape=[16], train_x=x, train_y=y, val_x=vx, val_y=vy, teacher=teacher
    )


def run(name: str, module: torch.nn.Module, ctx: PassContext, **params: object) -> torch.nn.Module:
    cls = get_pass(name)
    out = cls().run(ModelState(torch_module=module), cls.Config.model_validate(params), ctx).torch_module
    assert out is not None
    return out


def matched_mse(student: torch.nn.Module, teacher: torch.nn.Module, names: list[str], x: np.ndarray) -> float:
    ids = torch.from_numpy(x)
    hidden = HiddenStates(student, teacher, names, ids[:2])
    with torch.no_grad(), hidden.capture():
        student(ids)
        teacher(ids)
    value = float(hidden.loss(ids))
    hidden.close()
    return value


def test_depth_pruning_maps_each_kept_layer_to_the_baseline_layer_it_came_from(
    tmp_path: Path, trained: tuple[MiniLMClassifier, tuple[np.ndarray, ...]]
) -> None:
    teacher, data = trained
    ctx = ctx_for(tmp_path, data)
    student = run("depth_prune", copy.deepcopy(teacher), ctx, ratio=0.5)
    dropped, kept = ctx.notes["depth_prune_blocks"], ctx.notes["depth_prune_kept"]
    assert len(dropped) == 2 and sorted(dropped + kept) == [f"encoder.layers.{i}" for i in range(LAYERS)]
    assert all(not isinstance(student.get_submodule(n), SkippedBlock) for n in kept)
    # the mapping the recovery uses: the kept layers, each paired with the teacher's layer of that name
    hidden = HiddenStates(student, teacher, kept, torch.from_numpy(data[0][:2]))
    assert hidden.pairs == kept
    hidden.close()
    # hooks are gone: the models run as before, and nothing is recorded
    assert not student.encoder.layers[int(kept[0].rsplit(".", 1)[1])]._forward_hooks
    # The same on a CNN, through the pass: the recovery matches the residual blocks depth pruning kept.
    torch.manual_seed(0)
    cnn = ResNet((8, 16), (3, 2), num_classes=10).eval()
    images = np.random.default_rng(0).random((48, 1, 28, 28), dtype=np.float32)
    labels = np.arange(48) % 10
    cnn_ctx = ctx_for(tmp_path, (images, labels, images, labels), teacher=copy.deepcopy(cnn))
    pruned = run("depth_prune", cnn, cnn_ctx, ratio=0.5)
    run("finetune", pruned, cnn_ctx, epochs=1, distill=True, hidden_weight=1.0, augment=False)
    assert cnn_ctx.notes["finetune"]["hidden_layers"] == len(cnn_ctx.notes["depth_prune_kept"]) == 2


def test_hidden_state_distillation_pulls_the_kept_layers_toward_the_teacher(
    tmp_path: Path, trained: tuple[MiniLMClassifier, tuple[np.ndarray, ...]]
) -> None:
    teacher, data = trained
    x, y, vx, vy = data
    ctx = ctx_for(tmp_path, data, teacher=teacher)
    student = run("depth_prune", copy.deepcopy(teacher), ctx, ratio=0.5)
    kept = ctx.notes["depth_prune_kept"]
    before = matched_mse(student, teacher, kept, vx)
    after: dict[float, float] = {}
    for weight in (0.0, 1.0):
        model = copy.deepcopy(student)
        report = finetune(
            model, x, y, vx, vy, epochs=2, lr=1e-3, batch_size=32, teacher=teacher, seed=0,
            trim_padding=True, hidden_layers=kept, hidden_weight=weight,
        )  # fmt: skip
        assert report.hidden_pairs == (kept if weight else [])
        after[weight] = matched_mse(model, teacher, kept, vx)
    assert after[1.0] < 0.4 * before
    # the term is what did it: the same recovery without it (logits only) leaves the layers further off
    assert after[1.0] < 0.75 * after[0.0]
    # the teacher's layers carry no leftover hooks
    assert all(not layer._forward_hooks for layer in teacher.encoder.layers)


def test_hidden_distillation_needs_distill_and_blocks_that_match_and_is_described(
    tmp_path: Path, trained: tuple[MiniLMClassifier, tuple[np.ndarray, ...]]
) -> None:
    cls = get_pass("finetune")
    with pytest.raises(ValidationError, match=r"hidden_weight > 0 distils hidden states.*distill: true"):
        cls.Config(hidden_weight=1.0)
    schema = next(p for p in describe_passes() if p["name"] == "finetune")
    assert "hidden_weight" in str(schema)
    # a student whose blocks are narrower than the teacher's has nothing to match: refused before training
    teacher, data = trained
    narrow = MiniLMClassifier(
        EncoderConfig(
            vocab_size=200,
            hidden_size=16,
            num_layers=LAYERS,
            num_heads=4,
            intermediate_size=32,
            max_positions=16,
        )
    )
    ctx = ctx_for(tmp_path, data, teacher=teacher)
    with pytest.raises(PassError, match=r"finetune.*hidden_weight > 0, but none of the blocks"):
        run("finetune", narrow, ctx, epochs=1, distill=True, hidden_weight=1.0)
    assert "finetune" not in ctx.notes


def test_the_text_recipe_dropping_half_the_layers_runs_end_to_end_and_exports(
    tmp_path: Path, trained: tuple[MiniLMClassifier, tuple[np.ndarray, ...]]
) -> None:
    teacher, data = trained
    recipe = TEXT_DEPTH_RECIPE
    assert recipe.name == "vocab-depth50-kd-hid-qat-trim-int8-dynamic-pc"
    validate_steps(recipe.steps)
    ctx = ctx_for(tmp_path, data, teacher=teacher)
    model: torch.nn.Module = copy.deepcopy(teacher)
    state = ModelState(torch_module=model)
    for i, step in enumerate(recipe.steps):
        cls = get_pass(step.name)
        if cls.input_kind == "onnx" and state.kind == "torch":
            assert state.torch_module is not None
            model = state.torch_module
            state = ModelState(onnx_path=export_onnx(model, [16], tmp_path / "export.onnx", dtype=np.int64))
        ctx.workdir = tmp_path / f"{i:02d}"
        ctx.workdir.mkdir()
        params = {**step.params, "epochs": 1} if step.name == "finetune" else step.params  # seconds
        state = cls().run(state, cls.Config.model_validate(params), ctx)
    assert state.onnx_path is not None
    layers = [m for m in model.modules() if isinstance(m, EncoderLayer | SkippedBlock)]
    assert [isinstance(m, EncoderLayer) for m in layers].count(True) == LAYERS // 2 == len(layers) // 2
    assert ctx.notes["finetune"]["hidden_layers"] == LAYERS // 2
    vx, vy = data[2], data[3]
    logits = predict_logits(state.onnx_path, vx, threads=1)
    teacher_acc = accuracy(teacher, vx, vy)
    assert (logits.argmax(1) == vy).mean() >= teacher_acc - 0.1
