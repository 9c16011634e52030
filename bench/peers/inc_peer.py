"""Intel Neural Compressor peer: INC 3.x accuracy-aware post-training quantization (``autotune``).

    python bench/peers/inc_peer.py STATE_DICT FACTORY DATA_DIR OUT.onnx [--max-drop 0.01]
        [--max-trials 100] [--val-subset N] [--threads 2]

INC 3.x has no ONNX Runtime backend (its ONNX support left the package), so this runs INC the way
its 3.x documentation does for PyTorch: export the model to PT2E, ``autotune`` over INC's default
int8 static tuning space (symmetric/asymmetric activations x KL/min-max calibration) with an
evaluation function on the validation split until the accuracy goal holds, then export the
quantized graph to ONNX (QDQ) so it is measured in ONNX Runtime like every other row.

INC's ``tolerable_loss`` is relative; the absolute ``--max-drop`` is converted with the float
model's validation accuracy. ``--val-subset`` has the tuning loop evaluate on a seeded,
class-stratified subset of the validation split (bench/run.py passes it for the text model, whose
every evaluation is slow); the reported test accuracy is computed by bench/run.py on the full test
split either way. FACTORY is ``module:callable`` (e.g. ``squeezeflow.zoo.cnn:compact_cnn``);
only the zoo module is imported (it needs torch alone), from ``components/``.
Runs in bench/.venv-peers (INC is not a squeezeflow dependency).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np
from _common import calibration_samples, emit, example_batch, load_split, ort_accuracy, stratified_subset

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("state_dict")
    ap.add_argument("factory")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--max-drop", type=float, default=0.01)
    ap.add_argument("--calibration-samples", type=int, default=300)
    ap.add_argument("--max-trials", type=int, default=100)
    ap.add_argument("--val-subset", type=int, default=None, help="validation rows (None: the whole split)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads for the final check")
    args = ap.parse_args()

    import torch
    from neural_compressor.torch.algorithms.pt2e_quant.pt2e_compat import move_exported_model_to_eval
    from neural_compressor.torch.export import export
    from neural_compressor.torch.quantization import INT8StaticQuantConfig, TuningConfig, autotune
    from neural_compressor.version import __version__ as inc_version

    t0 = time.perf_counter()
    sys.path.insert(0, str(REPO / "components"))
    module_name, _, attr = args.factory.partition(":")
    model = getattr(importlib.import_module(module_name), attr)()
    model.load_state_dict(torch.load(args.state_dict, map_location="cpu", weights_only=True))
    model.eval()

    train_x, _ = load_split(args.data, "train")
    val_x, val_y = stratified_subset(*load_split(args.data, "val"), args.val_subset)
    calib = torch.from_numpy(calibration_samples(train_x, args.calibration_samples))
    xv = torch.from_numpy(val_x)

    def calibrate(m: torch.nn.Module) -> None:
        for i in range(0, len(calib), 32):
            m(calib[i : i + 32])

    def evaluate(m: torch.nn.Module) -> float:
        with torch.no_grad():
            pred = np.concatenate([m(xv[i : i + 250]).argmax(1).numpy() for i in range(0, len(xv), 250)])
        return float(np.mean(pred == val_y))

    base_val = evaluate(model)
    example = (torch.from_numpy(example_batch(train_x)),)
    dynamic = ({0: torch.export.Dim("batch")},)
    exported = export(model, example_inputs=example, dynamic_shapes=dynamic)
    tune = TuningConfig(
        config_set=[INT8StaticQuantConfig.get_config_set_for_tuning()],
        tolerable_loss=args.max_drop / max(base_val, 1e-9),
        max_trials=args.max_trials,
    )
    quantized = autotune(exported, tune, eval_fn=evaluate, run_fn=calibrate, example_inputs=example)
    move_exported_model_to_eval(quantized)
    torch.onnx.export(
        quantized,
        example,
        args.out,
        dynamo=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=dynamic,
        external_data=False,
        verbose=False,
    )
    emit(
        {
            "tool": f"neural-compressor {inc_version} (PT2E autotune, exported to ONNX)",
            "seconds": time.perf_counter() - t0,
            "float_val_accuracy": base_val,
            "torch_val_accuracy": evaluate(quantized),
            "onnx_val_accuracy": ort_accuracy(args.out, val_x, val_y, args.threads),
            "val_rows": len(val_y),
        }
    )


if __name__ == "__main__":
    main()
