"""Depth pruning drops whole blocks (residual blocks, transformer layers) whose removal keeps the model
valid, the least important first, and says what it dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from squeezeflow.errors import PassError
from squeezeflow.passes import ModelState, PassContext, describe_passes, get_pass, validate_steps
from squeezeflow.passes.depth import droppable_blocks
from squeezeflow.search.space import distributions, recipe_from_params
from squeezeflow.spec.search import PassStep, SearchSpace
from squeezeflow.zoo.cnn import ResNet, compact_cnn, tiny_cnn, wide_resnet
from squeezeflow.zoo.minilm import EncoderConfig, MiniLMClassifier


def ctx_for(tmp: Path, x: np.ndarray, classes: int = 10, y: np.ndarray | None = None) -> PassContext:
    y = np.arange(len(x)) % classes if y is None else y
    return PassContext(workdir=tmp, input_shape=list(x.shape[1:]), train_x=x, train_y=y, val_x=x, val_y=y)


def images(n: int = 48) -> np.ndarray:
    return np.random.default_rng(0).random((n, 1, 28, 28), dtype=np.float32)


def run(module: nn.Module, ctx: PassContext, **params: object) -> nn.Module:
    cls = get_pass("depth_prune")
    out = cls().run(ModelState(torch_module=module), cls.Config(**params), ctx)
    assert out.torch_module is not None
    return out.torch_module


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def residual_net() -> nn.Module:
    """Stages of 3 and 2 blocks: four stride-1 same-width blocks, every residual branch doing something."""
    torch.manual_seed(0)
    model = ResNet((8, 16), (3, 2), num_classes=10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)  # undo the zero-init that makes every block an identity
    return model.eval()


def test_finds_the_blocks_whose_removal_keeps_shapes() -> None:
    x = torch.from_numpy(images(2))
    names = [n for n, _p, _c in droppable_blocks(residual_net(), x)]
    # Not the stride-2 first block of stage 1, not the stem's layers, not a stage holding blocks.
    assert names == ["stages.0.0", "stages.0.1", "stages.0.2", "stages.1.1"]
    assert [n for n, _p, _c in droppable_blocks(wide_resnet(), x)] == ["stages.0.0"]
    # Plain same-width blocks drop validly too (the ranking decides whether they should); lone layers
    # (a BatchNorm, a ReLU between convolutions) are not blocks.
    assert [n for n, _p, _c in droppable_blocks(compact_cnn(), x)] == ["blocks.2", "blocks.4"]
    assert droppable_blocks(tiny_cnn(), x) == []


def test_drops_the_ratio_of_blocks_and_the_model_still_runs_smaller(tmp_path: Path) -> None:
    model, ctx = residual_net(), ctx_for(tmp_path, images())
    x = torch.from_numpy(images(4))
    before = n_params(model)
    pruned = run(model, ctx, ratio=0.5)
    assert pruned(x).shape == (4, 10)
    notes = ctx.notes["depth_prune"]
    assert notes["blocks_before"] == 4 and notes["blocks_dropped"] == 2
    assert notes["params_after"] == n_params(pruned) < before == notes["params_before"]
    assert notes["macs_after"] < notes["macs_before"]
    assert all(isinstance(v, int | float) for v in notes.values())  # every note becomes a metric
    assert len(ctx.notes["depth_prune_blocks"]) == 2
    # A small ratio still drops one block; 0 none.
    ctx = ctx_for(tmp_path, images())
    run(residual_net(), ctx, ratio=0.1)
    assert ctx.notes["depth_prune"]["blocks_dropped"] == 1
    ctx = ctx_for(tmp_path, images())
    assert n_params(run(residual_net(), ctx, ratio=0.0)) == n_params(residual_net())
    assert ctx.notes["depth_prune"]["blocks_dropped"] == 0


@pytest.mark.parametrize("importance", ["influence", "activation"])
def test_an_identity_block_is_dropped_first_and_exactly(tmp_path: Path, importance: str) -> None:
    model = residual_net()
    x = torch.from_numpy(images(8))
    with torch.no_grad():
        reference = model(x)
        block = model.stages[0][1]
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()  # relu(0 + x) = x: its input comes out of a ReLU, so it is the identity
        assert torch.equal(model(x), reference) is False  # the other blocks still work
        reference = model(x)
        data = images()
        labels = model(torch.from_numpy(data)).argmax(1).numpy()  # what a trained model would predict
    ctx = ctx_for(tmp_path, data, y=labels)
    pruned = run(model, ctx, ratio=0.25, importance=importance)
    assert ctx.notes["depth_prune_blocks"] == ["stages.0.1"]
    with torch.no_grad():
        assert torch.equal(pruned(x), reference)
    notes = ctx.notes["depth_prune"]
    assert notes["val_loss_after"] == pytest.approx(notes["val_loss_before"])


def test_drops_a_transformer_layer_called_with_a_mask(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = EncoderConfig(
        vocab_size=100, hidden_size=32, num_layers=3, num_heads=4, intermediate_size=64, max_positions=16
    )
    model = MiniLMClassifier(config, num_classes=2).eval()
    ids = np.random.default_rng(0).integers(1, 100, (32, 16)).astype(np.int64)
    ids[:, 12:] = 0  # padding, masked inside every layer
    ctx = ctx_for(tmp_path, ids, classes=2)
    pruned = run(model, ctx, ratio=0.34)
    dropped = ctx.notes["depth_prune_blocks"]
    assert ctx.notes["depth_prune"]["blocks_before"] == 3 and len(dropped) == 1
    assert dropped[0].startswith("encoder.layers.")
    assert len(pruned.encoder.layers) == 3  # the layer's slot holds a stand-in that passes h through
    with torch.no_grad():
        assert pruned(torch.from_numpy(ids[:4])).shape == (4, 2)
    assert ctx.notes["depth_prune"]["params_after"] < ctx.notes["depth_prune"]["params_before"]


def test_refuses_a_model_without_droppable_blocks_and_torchscript(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path, images())
    with pytest.raises(PassError, match=r"depth_prune.*no block whose output has its input's shape"):
        run(tiny_cnn(), ctx)
    cls = get_pass("depth_prune")
    scripted = torch.jit.script(wide_resnet().eval())
    with pytest.raises(PassError, match=r"depth_prune.*nn\.Module"):
        cls().run(ModelState(torch_module=scripted), cls.Config(), ctx)


def test_a_recipe_needs_recovery_after_it_and_the_passes_list_it() -> None:
    validate_steps([PassStep(name="depth_prune", params={"ratio": 0.25}), PassStep(name="finetune")])
    with pytest.raises(ValueError, match="must be followed by a finetune step"):
        validate_steps([PassStep(name="depth_prune"), PassStep(name="ort_dynamic_int8")])
    with pytest.raises(ValueError, match="ratio"):
        validate_steps([PassStep(name="depth_prune", params={"ratio": 0.95}), PassStep(name="finetune")])
    listed = {p["name"]: p for p in describe_passes()}
    assert "depth_ratio" in listed["depth_prune"]["searchable"][0]["summary"]


def test_the_search_drops_blocks_only_when_the_space_asks_for_depth() -> None:
    assert "depth_ratio" not in distributions(SearchSpace())
    space = SearchSpace(depth=True)
    assert "depth_ratio" in distributions(space)
    params = {"prune_ratio": 0.5, "importance": "magnitude", "round_to": 1, "distill": True}
    params |= {"quantize": "none", "depth_ratio": 0.25}
    recipe = recipe_from_params(params, space)
    names = [s.name for s in recipe.steps]
    assert names.index("depth_prune") < names.index("structured_prune") < names.index("finetune")
    assert recipe.steps[names.index("depth_prune")].params == {"ratio": 0.25}
    assert recipe.name is not None and recipe.name.startswith("depth25-prune50")
    no_depth = recipe_from_params(params | {"depth_ratio": 0.0}, space)
    assert "depth_prune" not in [s.name for s in no_depth.steps]


def test_a_trial_dropping_blocks_recovers_longer() -> None:
    space = SearchSpace(depth=True)
    params = {"prune_ratio": 0.5, "importance": "magnitude", "round_to": 1, "distill": True}
    params |= {"quantize": "none"}

    def epochs(depth_ratio: float) -> int:
        recipe = recipe_from_params(params | {"depth_ratio": depth_ratio}, space)
        return int(next(s.params["epochs"] for s in recipe.steps if s.name == "finetune"))

    assert epochs(0.0) < epochs(0.25) < epochs(0.5) <= space.finetune_epochs * space.max_recovery_scale
