"""Benchmark worker: measures one ONNX model in its own process (so one model's arenas, caches and
threads never skew another's numbers). Reads a JSON request from argv, prints a JSON result.

    python -m squeezeflow.bench_worker '{"model": "m.onnx", "input_shape": [1, 28, 28], ...}'
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np


def measure(req: dict[str, Any]) -> dict[str, Any]:
    threads = int(req["intra_op_threads"])
    if req.get("pin_cpus", True) and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= threads:
            os.sched_setaffinity(0, cpus[:threads])
    from squeezeflow.models import session

    sess = session(req["model"], intra_op_threads=threads, inter_op_threads=int(req["inter_op_threads"]))
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(0)
    x = rng.random((int(req["batch_size"]), *req["input_shape"]), dtype=np.float32)
    feed = {name: x}
    for _ in range(int(req["warmup"])):
        sess.run(None, feed)
    # Measure in rounds until the round medians agree (coefficient of variation under the target),
    # so a burst of load from another process shows up as instability instead of a wrong number.
    n = int(req["iterations"])
    target_cv = float(req.get("target_cv", 0.05))
    max_rounds = int(req.get("max_rounds", 5))
    rounds: list[np.ndarray] = []
    while True:
        times = np.empty(n, dtype=np.float64)
        for i in range(n):
            t0 = time.perf_counter_ns()
            sess.run(None, feed)
            times[i] = (time.perf_counter_ns() - t0) / 1e6
        rounds.append(times)
        medians = np.array([np.median(r) for r in rounds])
        cv = float(medians.std() / medians.mean()) if len(rounds) > 1 else float("inf")
        if (len(rounds) >= 2 and cv <= target_cv) or len(rounds) >= max_rounds:
            break
    all_times = np.concatenate(rounds)
    p50, p90, p95, p99 = np.percentile(all_times, [50, 90, 95, 99])
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "mean_ms": float(all_times.mean()),
        "throughput_per_s": float(int(req["batch_size"]) * 1000.0 / all_times.mean()),
        "iterations": len(all_times),
        "rounds": len(rounds),
        "cv_p50": cv,
    }


def main() -> None:
    print(json.dumps(measure(json.loads(sys.argv[1]))))


if __name__ == "__main__":
    main()
