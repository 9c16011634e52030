"""ONNX Runtime quantization peers, as ONNX Runtime's documentation shows them.

    python bench/peers/ort_peer.py dynamic MODEL.onnx DATA_DIR OUT.onnx
    python bench/peers/ort_peer.py static  MODEL.onnx DATA_DIR OUT.onnx [--calibration-samples 300]

dynamic: ``quantize_dynamic`` with its defaults (int8 weights, activations quantized at run time).
static: ``quantize_static`` to QDQ with per-channel weights, its default activation and weight types
and MinMax calibration on samples of the train split. Both run ORT's recommended pre-processing
(``quant_pre_process``) first. No accuracy control: what comes out is what is measured.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _common import calibration_samples, emit, load_split


class _Reader:
    """Feeds calibration samples to quantize_static in batches of 32."""

    def __init__(self, input_name: str, x: Any) -> None:
        self._batches = iter([{input_name: x[i : i + 32]} for i in range(0, len(x), 32)])

    def get_next(self) -> dict[str, Any] | None:
        return next(self._batches, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("method", choices=["dynamic", "static"])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--calibration-samples", type=int, default=300)
    args = ap.parse_args()

    import onnx
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    t0 = time.perf_counter()
    out = Path(args.out)
    pre = out.with_name(out.stem + "-pre.onnx")
    quant_pre_process(args.model, str(pre), skip_symbolic_shape=True)
    if args.method == "dynamic":
        quantize_dynamic(str(pre), str(out))
    else:
        train_x, _ = load_split(args.data, "train")
        input_name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
        CalibrationDataReader.register(_Reader)
        reader = _Reader(input_name, calibration_samples(train_x, args.calibration_samples))
        quantize_static(str(pre), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True)
    pre.unlink(missing_ok=True)
    emit({"tool": f"onnxruntime {onnxruntime.__version__}", "seconds": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
