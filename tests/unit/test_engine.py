"""The engine's building blocks: recipes from search parameters, recipe rules, the Pareto front,
and the torch passes on real modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from squeezeflow.errors import PassError, SpecError
from squeezeflow.passes import ModelState, PassContext, get_pass
from squeezeflow.search.recipes import default_recipes
from squeezeflow.search.space import (
    first_trials,
    pareto_front,
    recipe_from_params,
    recovery_epochs,
    search_space,
)
from squeezeflow.spec.job import JobSpec
from squeezeflow.spec.load import parse_spec
from squeezeflow.spec.search import SearchSpace
from squeezeflow.zoo.cnn import small_resnet, wide_resnet


def ctx_for(tmp: Path, n: int = 64, classes: int = 10) -> PassContext:
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    y = np.arange(n) % classes
    return PassContext(workdir=tmp, input_shape=[1, 28, 28], train_x=x, train_y=y, val_x=x, val_y=y)


def spec_with(steps: list[dict]) -> None:
    parse_spec(
        {
            "name": "j",
            "model": {"format": "onnx", "uri": "/m"},
            "data": {"uri": "/d"},
            "registry": {"model_name": "m"},
            "search": {"recipes": [{"steps": steps}]},
        }
    )


def test_pareto_front_keeps_only_non_dominated_points() -> None:
    points = {"a": (0.0, 1.0, 10.0), "b": (0.01, 0.5, 10.0), "c": (0.02, 0.6, 12.0), "d": (0.0, 1.0, 10.0)}
    assert pareto_front(points) == {"a", "b", "d"}


def test_search_parameters_become_a_valid_ordered_recipe() -> None:
    space = SearchSpace()
    recipe = recipe_from_params(
        {"prune_ratio": 0.6, "importance": "taylor", "distill": True, "quantize": "int8"}, space
    )
    assert [s.name for s in recipe.steps] == ["structured_prune", "finetune", "ort_static_int8"]
    assert recipe.steps[1].params["distill"] is True
    assert recipe.label == "prune60-taylor-kd-int8"


def test_pruned_widths_are_rounded_to_the_target_devices_channel_multiple_and_searched() -> None:
    # A width of 19 channels runs slower under ONNX Runtime's int8 kernels than one of 24: the search
    # rounds pruned widths to the target profile's channel multiple or its double, and opens with the first.
    doc = {
        "name": "aligned",
        "model": {"format": "onnx", "uri": "m.onnx"},
        "data": {"uri": "d"},
        "devices": [{"name": "edge", "channel_multiple": 16}],
        "registry": {"model_name": "m"},
    }
    space = search_space(JobSpec.model_validate(doc))
    assert space.round_to == [16, 32]
    assert [t["round_to"] for t in first_trials(space)] == [16, 16]
    assert search_space(JobSpec.model_validate({**doc, "devices": [{"name": "edge"}]})).round_to == [8, 16]
    mine = {**doc, "search": {"space": {"round_to": [1]}}}
    assert search_space(JobSpec.model_validate(mine)).round_to == [1]

    params = {"prune_ratio": 0.6, "importance": "taylor", "distill": True, "quantize": "int8", "round_to": 8}
    recipe = recipe_from_params(params, space)
    assert recipe.label == "prune60-w8-taylor-kd-int8"
    assert recipe.steps[0].params == {"ratio": 0.6, "importance": "taylor", "round_to": 8}
    assert recipe_from_params({**params, "round_to": 1}, space).label == "prune60-taylor-kd-int8"


def test_stronger_pruning_gets_longer_recovery_up_to_the_cap() -> None:
    space = SearchSpace(finetune_epochs=6)
    epochs = {r: recovery_epochs(r, space) for r in (0.3, 0.5, 0.6, 0.8, 0.9)}
    assert epochs[0.3] == epochs[0.5] == 6
    assert 6 < epochs[0.6] < epochs[0.8]
    assert epochs[0.8] == epochs[0.9] == 18  # capped at 3x
    assert recovery_epochs(0.9, SearchSpace(finetune_epochs=6, max_recovery_scale=1.0)) == 6
    recipe = recipe_from_params(
        {"prune_ratio": 0.8, "importance": "magnitude", "distill": False, "quantize": "int8"}, space
    )
    assert recipe.steps[1].params["epochs"] == 18


def test_text_model_recipes_prune_the_vocabulary_and_quantize_dynamically() -> None:
    params = {"prune_ratio": 0.5, "importance": "magnitude", "distill": True, "quantize": "int8"}
    recipe = recipe_from_params(params, SearchSpace(finetune_epochs=1), token_ids=True)
    assert [s.name for s in recipe.steps] == [
        "vocab_prune",
        "structured_prune",
        "finetune",
        "trim_padding",
        "ort_dynamic_int8",
    ]
    assert recipe.steps[2].params["lr"] == 1e-4  # a CNN's 3e-3 would wreck a pretrained transformer
    image = recipe_from_params(params, SearchSpace())
    assert image.steps[-1].name == "ort_static_int8" and image.steps[1].params["lr"] == 3e-3
    assert (
        recipe_from_params(params, SearchSpace(finetune_lr=5e-5), token_ids=True).steps[2].params["lr"]
        == 5e-5
    )
    text_defaults = [[s.name for s in r.steps] for r in default_recipes("int64")]
    assert text_defaults == [
        ["trim_padding", "ort_dynamic_int8"],
        ["trim_padding"],
        ["vocab_prune", "finetune", "trim_padding", "ort_dynamic_int8"],
        ["vocab_prune", "depth_prune", "finetune", "trim_padding", "ort_dynamic_int8"],
    ]
    qat = default_recipes("int64")[2].steps[1].params
    assert qat["quant_aware"] and qat["distill"] and qat["max_steps"] and qat["trim_padding"]
    # a searched text recipe that ends in int8 trains under simulated int8; a float one does not
    assert recipe.steps[2].params["quant_aware"] is True
    floating = recipe_from_params({**params, "quantize": "none"}, SearchSpace(), token_ids=True)
    assert "quant_aware" not in floating.steps[2].params
    # An ONNX text model cannot be wrapped: dynamic int8 alone.
    assert [[s.name for s in r.steps] for r in default_recipes("int64", torch_module=False)] == [
        ["ort_dynamic_int8"]
    ]
    assert all(r.steps[0].name == "ort_static_int8" for r in default_recipes()[:3])


def test_the_first_trials_prune_strongly_then_moderately_and_quantize_whatever_the_choice_order() -> None:
    trials = first_trials(SearchSpace(prune_ratio=(0.3, 0.9)))
    assert [t["prune_ratio"] for t in trials] == [0.85, 0.6]
    assert {t["quantize"] for t in trials} == {"int8"}
    # The bench's text space lists int8 first: the first trials used to be float candidates.
    text = first_trials(SearchSpace(prune_ratio=(0.2, 0.4), quantize=["int8", "none"], distill=[True]))
    assert [(t["prune_ratio"], t["quantize"], t["distill"]) for t in text] == [
        (0.35, "int8", True),
        (0.3, "int8", True),
    ]
    assert first_trials(SearchSpace(quantize=["none"]))[0]["quantize"] == "none"


def test_pruning_without_recovery_training_is_refused() -> None:
    with pytest.raises(SpecError, match="must be followed by a finetune step"):
        spec_with([{"name": "structured_prune"}, {"name": "ort_static_int8"}])


def test_torch_pass_after_an_onnx_pass_is_refused() -> None:
    with pytest.raises(SpecError, match="comes after an ONNX pass"):
        spec_with([{"name": "ort_static_int8"}, {"name": "finetune"}])


def test_search_space_refuses_an_inverted_ratio_range() -> None:
    with pytest.raises(ValueError, match="low <= high"):
        SearchSpace(prune_ratio=(0.8, 0.2))


def test_structured_pruning_shrinks_a_residual_network_and_keeps_it_runnable(tmp_path: Path) -> None:
    model = small_resnet().eval()
    before = sum(p.numel() for p in model.parameters())
    cls = get_pass("structured_prune")
    ctx = ctx_for(tmp_path)
    out = cls().run(ModelState(torch_module=model), cls.Config(ratio=0.5), ctx)
    after = sum(p.numel() for p in out.torch_module.parameters())
    assert after < 0.4 * before
    assert out.torch_module(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert ctx.notes["prune"]["macs_after"] < ctx.notes["prune"]["macs_before"]


def test_pruning_with_a_channel_multiple_keeps_every_pruned_width_a_multiple_of_it(tmp_path: Path) -> None:
    def widths(m: torch.nn.Module) -> list[int]:
        return sorted({c.out_channels for c in m.modules() if isinstance(c, torch.nn.Conv2d)})

    cls = get_pass("structured_prune")
    base = widths(wide_resnet())
    unaligned = cls().run(ModelState(torch_module=wide_resnet()), cls.Config(ratio=0.6), ctx_for(tmp_path))
    assert any(w % 8 for w in widths(unaligned.torch_module))  # 48 * 0.4 = 19.2 -> 19
    aligned = (
        cls()
        .run(ModelState(torch_module=wide_resnet()), cls.Config(ratio=0.6, round_to=8), ctx_for(tmp_path))
        .torch_module
    )
    assert all(w % 8 == 0 for w in widths(aligned)), widths(aligned)
    assert all(w < b for w, b in zip(widths(aligned), base, strict=True))
    assert aligned(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


class RecurrentHead(torch.nn.Module):
    """Convolution features over an image's rows, read in order by a recurrent layer, then a classifier."""

    def __init__(self, recurrent: type[torch.nn.RNNBase]) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, padding=1)
        )
        self.rnn = recurrent(4 * 28, 16, batch_first=True)
        self.classifier = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.features(x).permute(0, 2, 1, 3).flatten(2)
        return self.classifier(self.rnn(rows)[0][:, -1])


@pytest.mark.parametrize("recurrent", [torch.nn.GRU, torch.nn.LSTM], ids=["gru", "lstm"])
def test_pruning_keeps_a_recurrent_head_whole_names_it_and_prunes_the_rest(
    tmp_path: Path, recurrent: type[torch.nn.RNNBase]
) -> None:
    model = RecurrentHead(recurrent).eval()
    rnn_weights = {k: v.clone() for k, v in model.rnn.state_dict().items()}
    cls = get_pass("structured_prune")
    ctx = ctx_for(tmp_path)
    out = cls().run(ModelState(torch_module=model), cls.Config(ratio=0.5), ctx).torch_module
    assert out.features[0].out_channels == 4  # pruned
    assert out.features[2].out_channels == 4  # feeds the recurrent layer: kept
    assert all(torch.equal(v, rnn_weights[k]) for k, v in out.rnn.state_dict().items())
    assert out(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert ctx.notes["prune"]["kept_whole"] == (
        f"rnn ({recurrent.__name__}: Torch-Pruning cannot prune recurrent layers)"
    )
    assert ctx.notes["prune"]["params_after"] < ctx.notes["prune"]["params_before"]


def test_pruning_a_model_with_nothing_but_a_recurrent_layer_is_refused_naming_it(tmp_path: Path) -> None:
    class RowReader(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.GRU(28, 16, batch_first=True)
            self.classifier = torch.nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.rnn(x.squeeze(1))[0][:, -1])

    cls = get_pass("structured_prune")
    with pytest.raises(PassError, match=r"structured_prune.*nothing left to prune.*rnn \(GRU"):
        cls().run(ModelState(torch_module=RowReader()), cls.Config(ratio=0.5), ctx_for(tmp_path))


@pytest.mark.filterwarnings("ignore:Unwrapped parameters detected")  # Torch-Pruning, on the first try
def test_pruning_keeps_a_custom_layer_whole_when_torch_pruning_breaks_it_and_names_it(tmp_path: Path) -> None:
    class ChannelContext(torch.nn.Module):
        """A custom op that hard-codes its width: pruning its input channels breaks its forward."""

        def __init__(self, channels: int) -> None:
            super().__init__()
            self.channels = channels
            self.scale = torch.nn.Parameter(torch.ones(channels))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mean = x.mean(1, keepdim=True).expand(-1, self.channels, -1, -1)
            return x * self.scale.view(1, -1, 1, 1) + mean

    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        ChannelContext(8),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 10),
    ).eval()
    cls = get_pass("structured_prune")
    ctx = ctx_for(tmp_path)
    out = cls().run(ModelState(torch_module=model), cls.Config(ratio=0.5), ctx).torch_module
    assert out[0].out_channels == 8 and out[2].scale.shape == (8,)  # the custom layer and its input: whole
    assert out[3].out_channels == 4  # the rest: pruned
    assert out(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    notes = ctx.notes["prune"]
    assert notes["kept_whole"] == "2 (ChannelContext: custom layer Torch-Pruning has no pruner for)"
    assert notes["first_try_failed"].startswith("RuntimeError: The size of tensor")


def test_taylor_importance_uses_gradients_and_prunes(tmp_path: Path) -> None:
    cls = get_pass("structured_prune")
    out = cls().run(
        ModelState(torch_module=small_resnet()), cls.Config(ratio=0.3, importance="taylor"), ctx_for(tmp_path)
    )
    assert out.torch_module(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_low_rank_factorisation_is_exact_for_a_low_rank_layer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(256, 8) @ torch.randn(8, 784) / 30)
    x = torch.rand(4, 1, 28, 28)
    expected = net(x)
    cls = get_pass("lowrank_svd")
    ctx = ctx_for(tmp_path)
    out = cls().run(ModelState(torch_module=net), cls.Config(rank_ratio=0.05), ctx).torch_module
    assert isinstance(out[1], torch.nn.Sequential)  # factorised
    assert isinstance(out[3], torch.nn.Linear)  # the classifier is left alone
    torch.testing.assert_close(out(x), expected, rtol=1e-3, atol=1e-4)
    assert ctx.notes["lowrank"]["layers_factorised"] == 1


def test_low_rank_says_so_when_no_layer_gains(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    cls = get_pass("lowrank_svd")
    with pytest.raises(PassError, match="no layer"):
        cls().run(ModelState(torch_module=net), cls.Config(), ctx_for(tmp_path))


def test_pruning_a_torchscript_module_fails_with_the_pass_named(tmp_path: Path) -> None:
    scripted = torch.jit.script(small_resnet().eval())
    cls = get_pass("structured_prune")
    with pytest.raises(PassError, match=r"structured_prune.*nn\.Module"):
        cls().run(ModelState(torch_module=scripted), cls.Config(), ctx_for(tmp_path))
