"""OpenVINO NNCF peer: ``nncf.quantize_with_accuracy_control`` on the ONNX baseline (ONNX backend).

    python bench/peers/nncf_peer.py MODEL.onnx DATA_DIR OUT.onnx [--max-drop 0.01] [--subset-size 300]
        [--max-iter N] [--val-subset N] [--ranking-subset-size N] [--threads 2]

Calibrates on the train split, controls accuracy on the validation split (absolute drop), the way
NNCF's documentation shows it; writes the quantized ONNX model and prints a JSON summary.
``--val-subset`` has the accuracy-control loop evaluate on a seeded, class-stratified subset of the
validation split and ``--ranking-subset-size`` sets NNCF's ranking subset (its default is 300 rows):
bench/run.py passes both for the text model, whose every evaluation is slow; the reported test
accuracy is computed by bench/run.py on the full test split either way.
Runs in bench/.venv-peers (NNCF is not a squeezeflow dependency).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from _common import calibration_samples, emit, load_split, ort_predictions, ort_session, stratified_subset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--max-drop", type=float, default=0.01)
    ap.add_argument("--subset-size", type=int, default=300)
    ap.add_argument("--max-iter", type=int, default=None, help="accuracy restorer iterations (None: NNCF's)")
    ap.add_argument("--val-subset", type=int, default=None, help="validation rows (None: the whole split)")
    ap.add_argument("--ranking-subset-size", type=int, default=None, help="ranking rows (None: NNCF's)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    args = ap.parse_args()

    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    t0 = time.perf_counter()
    model = onnx.load(args.model)
    input_name = model.graph.input[0].name
    train_x, _ = load_split(args.data, "train")
    val_x, val_y = stratified_subset(*load_split(args.data, "val"), args.val_subset)
    calib = calibration_samples(train_x, args.subset_size)
    calibration = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))], lambda x: {input_name: x})
    validation = nncf.Dataset(
        list(zip(val_x[:, None], val_y, strict=True)), lambda item: {input_name: item[0]}
    )

    def validate(m: onnx.ModelProto, items: Iterable[Any]) -> tuple[float, list[float]]:
        items = list(items)
        x = np.concatenate([it[0] for it in items])
        y = np.array([it[1] for it in items])
        correct = (ort_predictions(ort_session(m.SerializeToString(), args.threads), x) == y).astype(float)
        return float(correct.mean()), correct.tolist()

    restorer = AdvancedAccuracyRestorerParameters()
    if args.max_iter is not None:
        restorer.max_num_iterations = args.max_iter
    if args.ranking_subset_size is not None:
        restorer.ranking_subset_size = args.ranking_subset_size
    quantized = nncf.quantize_with_accuracy_control(
        model,
        calibration,
        validation,
        validate,
        max_drop=args.max_drop,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=args.subset_size,
        advanced_accuracy_restorer_parameters=restorer,
    )
    onnx.save(quantized, args.out)
    emit(
        {
            "tool": f"nncf {nncf.__version__}",
            "seconds": time.perf_counter() - t0,
            "val_accuracy": validate(quantized, validation.get_data())[0],
            "val_rows": len(val_y),
        }
    )


if __name__ == "__main__":
    main()
