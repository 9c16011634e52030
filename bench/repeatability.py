"""How repeatable is a benchmark? The same ONNX model measured in separate runs of the benchmark stage's
worker (each a fresh process, threads pinned, rounds until the round medians agree), and the spread of
the runs' p50 latencies.

    .venv/bin/python bench/repeatability.py                      # the cached compact (or tiny) model
    .venv/bin/python bench/repeatability.py --model m.onnx --runs 5 --profile x86-edge-2t

Prints a table and writes bench/out/repeatability.json: each run's p50, p95, rounds and in-run
coefficient of variation of the round medians (``cv_p50``), and across the runs the mean p50 and its
coefficient of variation (sample standard deviation / mean), the repeatability figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
CACHED = [  # (factory, state_dict): the bench's compact model, then the tests' tiny one
    ("compact_cnn", REPO / ".squeezeflow" / "bench" / "models" / "compact_cnn.pt"),
    ("tiny_cnn", REPO / ".squeezeflow" / "test-cache" / "tiny_cnn.pt"),
]
SHAPE = [1, 28, 28]


def default_model(work: Path) -> tuple[Path, str]:
    """A cached reference model exported to ONNX, and its name."""
    from squeezeflow.models.sources import export_onnx, load_torch_model
    from squeezeflow.spec.job import ModelSource

    for factory, weights in CACHED:
        if weights.exists():
            source = ModelSource(
                format="state_dict", uri=str(weights), factory=f"squeezeflow.zoo.cnn:{factory}"
            )
            out = work / f"{factory}.onnx"
            export_onnx(load_torch_model(source, weights), SHAPE, out)
            return out, factory
    raise SystemExit(
        "no cached reference model (" + ", ".join(str(w) for _, w in CACHED) + "): run `make bench` or the "
        "tests once, or pass --model path.onnx"
    )


def main(argv: list[str] | None = None) -> int:
    from squeezeflow.spec.devices import DeviceProfile, profile_library
    from squeezeflow.stages.benchmark import run_worker

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="ONNX model (default: the cached compact or tiny model)")
    ap.add_argument("--input-shape", default="1,28,28", help="one sample's shape (default 1,28,28)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", default="x86-edge-2t", help="a shipped device profile (its batch_size only)")
    ap.add_argument("--out", type=Path, default=OUT / "repeatability.json")
    args = ap.parse_args(argv)

    lib = profile_library()
    if args.profile not in lib:
        raise SystemExit(f"no shipped profile {args.profile!r}; available: {sorted(lib)}")
    profile: DeviceProfile = lib[args.profile]
    if profile.runtime != "onnxruntime":
        raise SystemExit(f"{args.profile} is not an ONNX Runtime profile")
    work = REPO / ".squeezeflow" / "bench" / "repeatability"
    work.mkdir(parents=True, exist_ok=True)
    model, name = (args.model, args.model.name) if args.model else default_model(work)
    shape = [int(d) for d in args.input_shape.split(",")]
    request = {
        "model": str(model),
        "profile": profile.name,
        "runtime": profile.runtime,
        "execution_provider": profile.execution_provider,
        "input_shape": shape,
        "intra_op_threads": profile.intra_op_threads,
        "inter_op_threads": profile.inter_op_threads,
        "batch_size": profile.batch_size,
        "warmup": profile.warmup,
        "iterations": profile.iterations,
    }

    runs: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    for i in range(args.runs):
        t0 = time.monotonic()
        m = run_worker(request, profile.intra_op_threads, f"{name} run {i + 1}", 1200)
        runs.append(
            {
                "run": i + 1,
                "p50_ms": m["p50_ms"],
                "p95_ms": m["p95_ms"],
                "rounds": m["rounds"],
                "iterations": m["iterations"],
                "cv_p50_in_run": m["cv_p50"],
                "seconds": round(time.monotonic() - t0, 2),
            }
        )
    p50 = np.array([r["p50_ms"] for r in runs])
    cv = float(p50.std(ddof=1) / p50.mean()) if len(p50) > 1 else float("nan")
    summary = {
        "model": name,
        # What was measured: the profile's `batch_size` only (its extra batch sizes are not timed here).
        "profile": profile.model_dump(
            mode="json", exclude={"profile", "extra_batch_sizes", "budgets", "remote", "remote_timeout_s"}
        ),
        "input_shape": shape,
        "runs": runs,
        "p50_ms": [float(v) for v in p50],
        "p50_mean_ms": float(p50.mean()),
        "cv_p50_across_runs": cv,
        "cv_definition": "sample standard deviation (ddof=1) of the runs' p50 over their mean",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

    threads = profile.intra_op_threads
    print(f"{name} on {profile.name} (batch {profile.batch_size}, {threads} threads), {len(runs)} runs")
    print(f"{'run':>4} {'p50 ms':>9} {'p95 ms':>9} {'rounds':>7} {'in-run CV':>10} {'seconds':>8}")
    for r in runs:
        print(
            f"{r['run']:>4} {r['p50_ms']:>9.4f} {r['p95_ms']:>9.4f} {r['rounds']:>7} "
            f"{r['cv_p50_in_run']:>10.2%} {r['seconds']:>8.1f}"
        )
    print(f"p50 mean {p50.mean():.4f} ms, CV across runs {cv:.2%}")
    machine = summary["machine"]
    print(f"load average before/after: {machine['load_average_before']} / {machine['load_average_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
