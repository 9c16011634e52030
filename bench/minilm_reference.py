"""Measure the fine-tuned MiniLM review classifier as it ships: ONNX fp32 and ONNX Runtime dynamic int8.

    .venv/bin/python bench/minilm_reference.py [--model .squeezeflow/test-cache/minilm_rt-e2.pt]
        [--data .squeezeflow/test-cache/rotten-tomatoes] [--iterations 300]

The model is a state_dict written by ``python -m squeezeflow.zoo.minilm_train`` (fine-tuning is not done
here). For the fp32 export and its ``quantize_dynamic`` copy (ORT pre-processing, int8 weights, per-tensor,
like squeezeflow's ``ort_dynamic_int8`` pass) it measures, in ONNX Runtime directly: top-1 accuracy on the
whole test split, file size, and latency at batch 1 (2 intra-op threads, sequential execution, real test
samples padded to the dataset's length, warm-up first, rounds alternating between the models). Prints a
table and writes bench/out/minilm_reference.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".squeezeflow" / "test-cache"


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def accuracy(path: Path, ids: np.ndarray, mask: np.ndarray, y: np.ndarray, threads: int) -> float:
    sess = session(path, threads)
    preds = [
        sess.run(None, {"input_ids": ids[i : i + 64], "attention_mask": mask[i : i + 64]})[0].argmax(1)
        for i in range(0, len(y), 64)
    ]
    return float((np.concatenate(preds) == y).mean())


def latencies(
    paths: dict[str, Path],
    ids: np.ndarray,
    mask: np.ndarray,
    threads: int,
    warmup: int,
    iterations: int,
    rounds: int,
) -> dict[str, dict[str, Any]]:
    """Batch-1 latency of each model; rounds alternate between the models so that a change in the load
    of a shared machine hits them alike."""
    sessions = {name: session(path, threads) for name, path in paths.items()}
    times: dict[str, list[float]] = {name: [] for name in paths}
    per_round = max(1, iterations // rounds)
    for r in range(rounds):
        for name, sess in sessions.items():
            for i in range((warmup if r == 0 else 0) + per_round):
                k = (r * per_round + i) % len(ids)
                feed = {"input_ids": ids[k][None], "attention_mask": mask[k][None]}
                start = time.perf_counter()
                sess.run(None, feed)
                if r > 0 or i >= warmup:
                    times[name].append((time.perf_counter() - start) * 1e3)
    out = {}
    for name, t in times.items():
        q = statistics.quantiles(t, n=100)
        out[name] = {
            "p50_ms": round(statistics.median(t), 3),
            "p90_ms": round(q[89], 3),
            "iterations": len(t),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from squeezeflow.datasets.rotten_tomatoes import load_token_split
    from squeezeflow.zoo.minilm import minilm_classifier
    from squeezeflow.zoo.minilm_train import export_minilm_onnx

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=CACHE / "minilm_rt-e2.pt")
    parser.add_argument("--data", type=Path, default=CACHE / "rotten-tomatoes")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "minilm_reference.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--iterations", type=int, default=300, help="timed runs per model, over all rounds")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    record = json.loads(args.model.with_suffix(".json").read_text())
    max_length = int(json.loads((args.data / "dataset.json").read_text())["input_shape"][0])
    test, train = load_token_split(args.data, "test"), load_token_split(args.data, "train")
    fp32 = args.model.with_suffix(".onnx")
    if not fp32.is_file():
        model = minilm_classifier(**record["factory_kwargs"])
        model.load_state_dict(torch.load(args.model, map_location="cpu", weights_only=True))
        export_minilm_onnx(model, fp32, max_length=max_length)
    work = args.out.parent / "minilm"
    work.mkdir(parents=True, exist_ok=True)
    pre, int8 = work / "pre.onnx", work / "dynamic_int8.onnx"
    start = time.perf_counter()
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    quantize_dynamic(str(pre), str(int8), weight_type=QuantType.QInt8, per_channel=False)
    quantize_seconds = time.perf_counter() - start

    paths = {"fp32": fp32, "ort_dynamic_int8": int8}
    lat = latencies(
        paths, test.input_ids, test.attention_mask, args.threads, args.warmup, args.iterations, args.rounds
    )
    rows = []
    for name, path in paths.items():
        acc = accuracy(path, test.input_ids, test.attention_mask, test.y, args.threads)
        size_mb = round(path.stat().st_size / 1e6, 2)
        rows.append({"model": name, "test_accuracy": round(acc, 4), "size_mb": size_mb, **lat[name]})
    base = rows[0]
    for row in rows:
        row["smaller_x"] = round(base["size_mb"] / row["size_mb"], 2)
        row["faster_x_p50"] = round(base["p50_ms"] / row["p50_ms"], 2)
    result = {
        "rows": rows,
        "test_n": len(test),
        "torch_test_accuracy": record["test_accuracy"],
        "finetune_seconds": record["seconds"],
        "quantize_dynamic_seconds": round(quantize_seconds, 1),
        "train_distinct_token_ids": int(np.unique(train.input_ids).size),
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'model':<18} {'acc':>7} {'MB':>7} {'p50 ms':>8} {'p90 ms':>8} {'smaller':>8} {'faster':>7}")
    for r in rows:
        print(
            f"{r['model']:<18} {r['test_accuracy']:>7.4f} {r['size_mb']:>7.1f} {r['p50_ms']:>8.2f} "
            f"{r['p90_ms']:>8.2f} {r['smaller_x']:>7.2f}x {r['faster_x_p50']:>6.2f}x"
        )
    print(f"test n={len(test)}; load average {result['load_average']}; written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
