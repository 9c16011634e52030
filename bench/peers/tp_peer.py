"""Torch-Pruning peer: one-shot magnitude pruning to a MACs target, then plain fine-tuning.

    python bench/peers/tp_peer.py STATE_DICT FACTORY DATA_DIR OUT.onnx [--speedup 4] [--epochs 5]

What a Torch-Pruning user writes after its README: a ``MetaPruner`` with L2 group-magnitude
importance, stepped until the model needs ``--speedup`` times fewer MACs (classifier kept whole),
then fine-tuned with cross-entropy (AdamW, cosine schedule, no distillation, no augmentation, the last
epoch's weights kept) and exported to ONNX the same way as the baseline row.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import emit, load_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("state_dict")
    ap.add_argument("factory")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--speedup", type=float, default=4.0, help="target MACs reduction")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    import torch_pruning as tp

    from squeezeflow.models.sources import export_onnx, import_callable

    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = import_callable(args.factory)()
    model.load_state_dict(torch.load(args.state_dict, map_location="cpu", weights_only=True))
    model.eval()
    train_x, train_y = load_split(args.data, "train")
    val_x, val_y = load_split(args.data, "val")
    example = torch.from_numpy(train_x[:1])
    num_classes = int(train_y.max()) + 1

    # Prune: magnitude importance, small steps until the MACs target is reached.
    ignored = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_classes]
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=0.9,
        iterative_steps=30,
        ignored_layers=ignored,
    )
    base_macs, base_params = tp.utils.count_ops_and_params(model, example)
    macs, params = base_macs, base_params
    steps = 0
    while macs > base_macs / args.speedup and steps < 30:
        pruner.step()
        steps += 1
        macs, params = tp.utils.count_ops_and_params(model, example)

    # Fine-tune: plain cross-entropy.
    xt, yt = torch.from_numpy(train_x), torch.from_numpy(train_y)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = (len(xt) + args.batch_size - 1) // args.batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * steps_per_epoch)

    def val_accuracy() -> float:
        model.eval()
        with torch.no_grad():
            logits = [model(torch.from_numpy(val_x[i : i + 500])) for i in range(0, len(val_x), 500)]
        return float(np.mean(torch.cat(logits).argmax(1).numpy() == val_y))

    pruned_acc = val_accuracy()
    gen = torch.Generator().manual_seed(0)
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), args.batch_size):
            idx = order[i : i + args.batch_size]
            if len(idx) < 2:
                continue
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    export_onnx(model, list(train_x.shape[1:]), Path(args.out))
    emit(
        {
            "tool": f"torch-pruning {tp.__version__}",
            "seconds": time.perf_counter() - t0,
            "macs_before": int(base_macs),
            "macs_after": int(macs),
            "params_before": int(base_params),
            "params_after": int(params),
            "prune_steps": steps,
            "val_accuracy_pruned": pruned_acc,
            "val_accuracy": val_accuracy(),
        }
    )


if __name__ == "__main__":
    main()
