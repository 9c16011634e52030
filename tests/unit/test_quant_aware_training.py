"""Quantization-aware training for dynamic int8: what the simulation computes, and that it leaves nothing
behind on the model."""

from __future__ import annotations

import numpy as np
import torch

from squeezeflow.training import fake_int8_dynamic, finetune


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def test_simulated_layers_see_int8_weights_and_uint8_inputs_and_pass_gradients() -> None:
    model = _mlp()
    x = torch.randn(5, 6)
    first = model[0]
    w = first.weight.detach().clone()
    with fake_int8_dynamic(model) as covered:
        assert covered == 2
        out = first(x)
        # by hand: per-output-channel symmetric int8 weights, the input in uint8 over its own range
        scale_w = w.abs().amax(dim=1, keepdim=True) / 127
        wq = torch.round(w / scale_w).clamp(-127, 127) * scale_w
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        s = (hi - lo) / 255
        z = round(-lo / s)
        xq = (torch.clamp(torch.round(x / s) + z, 0, 255) - z) * s
        torch.testing.assert_close(out, xq @ wq.T + first.bias, rtol=0, atol=1e-5)
        assert not torch.allclose(out, x @ w.T + first.bias, atol=1e-4)  # rounding is really there
        model(x).sum().backward()
        assert first.weight_float.grad is not None and first.weight_float.grad.abs().sum() > 0
    # afterwards: the same float Parameter under its own name, nothing else on the model
    assert isinstance(first.weight, torch.nn.Parameter) and torch.equal(first.weight.detach(), w)
    assert sorted(model.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    torch.testing.assert_close(model(x), torch.relu(x @ w.T + first.bias) @ model[2].weight.T + model[2].bias)


def test_quant_aware_finetune_trains_float_weights_and_restores_the_model() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = finetune(
        model,
        x[:192],
        y[:192],
        x[192:],
        y[192:],
        epochs=3,
        lr=1e-2,
        batch_size=32,
        augment=False,
        quant_aware=True,
    )
    assert report.epochs_run >= 1 and report.best_val_accuracy > report.initial_val_accuracy
    state = model.state_dict()
    assert sorted(state) == sorted(before)
    assert all(isinstance(p, torch.nn.Parameter) for p in (model[0].weight, model[2].weight))
    assert not torch.equal(state["0.weight"], before["0.weight"])


def test_max_steps_caps_the_batches_each_epoch_trains_on() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = _mlp()
    trained: list[int] = []
    model.register_forward_hook(lambda m, args, out: trained.append(len(args[0])) if m.training else None)
    finetune(
        model,
        x[:192],
        y[:192],
        x[192:],
        y[192:],
        epochs=2,
        lr=1e-2,
        batch_size=32,
        augment=False,
        max_steps=2,
    )
    assert trained == [32, 32, 32, 32]  # 2 of the 6 batches in each of the 2 epochs
