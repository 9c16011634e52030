"""GPU check: the ResNet-18 reference job trained on a CUDA GPU and on the CPU, side by side.

    bench/gpu_check.sh                       # sets up the environment, then runs this
    python bench/gpu_check.py [--dry-run] [--tiny] [--budget 240] [--epochs 2] [--max-steps 40]

On a machine where PyTorch sees a CUDA GPU it runs the same job twice, with ``training.device: cuda``
and with ``cpu``: one explicit recipe that trains (structured pruning, recovery fine-tuning distilled
from the baseline, static int8), so both runs build the same candidate and only where it trained
differs. It prints each run's optimize-stage time (the candidate builds, training included) and the
promoted candidate's ratios (size, speedup, accuracy delta), and fails (exit 1) when the two runs'
ratios differ by more than the tolerances. It then measures the candidate and the baseline on the
shipped CUDA execution-provider profile (``jetson-orin-cuda``, measured here instead of on a Jetson)
with squeezeflow's benchmark worker; an ONNX Runtime without the CUDA provider (the plain
``onnxruntime`` wheel) is reported, not measured on the CPU instead.

Without a GPU it says so and runs the tiny version on the CPU only (the tiny CNN, a few training steps,
small benchmark budgets), which checks the whole path in well under a minute; it also shows that a
``training.device: cuda`` job is refused here before any work. ``--dry-run`` prints the plan and exits.
The results go to ``bench/out/gpu_check.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / ".squeezeflow" / "bench" / "gpu-check"
OUT = REPO / "bench" / "out" / "gpu_check.json"
TRAINED = "prune-kd-int8"  # the tiny check's recipe stops before int8: "prune-kd"
CUDA_PROFILE = "jetson-orin-cuda"
# How far the two runs' promoted candidates may differ: the pruned structure is the same (magnitude
# importance, before any training), so size hardly moves; accuracy moves with the float arithmetic
# of the device it trained on; speed is measured on a shared CPU, run to run.
TOLERANCES = {"size_ratio": 0.02, "speedup": 0.25, "delta": 0.02}

log = logging.getLogger("gpu_check")


def gpu_here() -> tuple[bool, str]:
    """Whether PyTorch sees a CUDA GPU, and what it sees (or why not), in words."""
    import torch

    if not torch.cuda.is_available():
        why = "a CPU-only PyTorch build" if torch.version.cuda is None else "no CUDA device visible"
        return False, f"no CUDA GPU here (torch {torch.__version__}: {why})"
    name = torch.cuda.get_device_name(0)
    bf16 = "bf16" if torch.cuda.is_bf16_supported() else "no bf16"
    return True, f"{name} (torch {torch.__version__}, CUDA {torch.version.cuda}, {bf16})"


def _bench_run() -> Any:
    """bench/run.py as a module (its reference data and model preparation)."""
    spec = importlib.util.spec_from_file_location("bench_run", Path(__file__).with_name("run.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_inputs(args: argparse.Namespace, tiny: bool) -> tuple[Path, str, Path]:
    """(state_dict, factory, dataset directory): given on the command line, else the bench's reference
    model (trained once, cached under .squeezeflow/bench/models/) on Animal-MNIST."""
    zoo = "tiny_cnn" if tiny else "resnet18_style"
    factory = args.factory or f"squeezeflow.zoo.cnn:{zoo}"
    if args.model_file and args.data:
        return Path(args.model_file), factory, Path(args.data)
    bench = _bench_run()
    model = bench.BenchModel("resnet18" if not tiny else "tiny", zoo)
    data = Path(args.data) if args.data else bench.prepare_data(model)
    if args.model_file:
        return Path(args.model_file), factory, data
    from squeezeflow.zoo.train import train_reference_model

    out = bench.ROOT / "models" / f"{zoo}.pt"
    if not (out.is_file() and out.with_suffix(".json").is_file()):
        print(f"training the reference {zoo} (first run only; carry .squeezeflow/bench/models/ to skip it)")
    train_reference_model(zoo, data, out, epochs=args.reference_epochs, progress=False)
    return out, factory, data


def job_doc(
    name: str, state_dict: Path, factory: str, data: Path, device: str, args: argparse.Namespace, tiny: bool
) -> dict[str, Any]:
    """The check's job: one explicit recipe that trains, measured on two CPU threads."""
    steps: list[dict[str, Any]] = [
        {"name": "structured_prune", "params": {"ratio": args.prune_ratio, "importance": "magnitude"}},
        {
            "name": "finetune",
            "params": {
                "epochs": args.epochs,
                "distill": True,
                **({"max_steps": args.max_steps} if args.max_steps else {}),
                "max_seconds": args.budget,
            },
        },
    ]
    if not tiny:  # int8 makes a tiny CNN slower: the tiny check stops at the trained float model
        steps.append({"name": "ort_static_int8", "params": {}})
    return {
        "apiVersion": "squeezeflow/v1",
        "name": name,
        "model": {"format": "state_dict", "uri": str(state_dict), "factory": factory},
        "data": {"uri": str(data)},
        "tolerance": {"mode": "absolute", "max_drop": 0.99 if tiny else args.max_drop},
        "devices": [
            {
                "name": "cpu-2t",
                "intra_op_threads": 2,
                "batch_size": 1,
                "warmup": 5 if tiny else 20,
                "iterations": 20 if tiny else 100,
            }
        ],
        "search": {
            "recipes": [{"name": "prune-kd" if tiny else TRAINED, "steps": steps}],
            "max_trials": 1,
            "rounds": 0,
            "max_seconds": args.budget,
            "skip_slower_than": None,
            "seed": 0,
        },
        "training": {"device": device, "precision": args.precision},
        "registry": {"model_name": name, "alias": "champion"},
    }


def run_one(doc: dict[str, Any], home: Path) -> dict[str, Any]:
    """Run the job in ``home`` (embedded MLflow, local artifacts, from scratch); what it built."""
    from squeezeflow.results import BaselineResult, CandidateResult, content_key
    from squeezeflow.runner import run_job
    from squeezeflow.spec.load import parse_spec
    from squeezeflow.stages import Settings
    from squeezeflow.store.artifacts import open_store

    shutil.rmtree(home, ignore_errors=True)  # recorded stage results would replay an earlier run
    home.mkdir(parents=True)
    settings = Settings(
        artifacts=str(home / "artifacts"),
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        workdir=home / "work",
    )
    spec = parse_spec(doc, source=f"<gpu check {doc['training']['device']}>")
    t0 = time.perf_counter()
    result = run_job(spec, settings, progress=False)
    seconds = time.perf_counter() - t0
    store = open_store(settings.artifacts)
    built = {
        c.candidate_key: CandidateResult.model_validate(store.read_record("optimize", c.candidate_key))
        for c in result.candidates
    }
    promoted = result.promotion.candidate_key if result.promotion.promoted else None
    # one recipe: its candidate, promoted or not
    row = next(c for c in result.candidates if promoted in (None, c.candidate_key))
    cand = built[row.candidate_key]
    baseline = BaselineResult.model_validate(
        store.read_record("baseline", content_key("baseline", result.job_key))
    )
    baseline_onnx = store.fetch(baseline.onnx, home / "work" / "cache")
    finetune = cand.notes.get("finetune", {})
    return {
        "device": doc["training"]["device"],
        "job_seconds": round(seconds, 1),
        "optimize_seconds": round(sum(c.seconds or 0.0 for c in built.values()), 1),
        "training_seconds": finetune.get("seconds"),
        "trained_on": finetune.get("device"),
        "precision": finetune.get("precision"),
        "promoted": row.label if promoted else None,
        "run_id": row.run_id,
        "tracking_uri": settings.tracking_uri,
        "reason": result.promotion.reason,
        "ratios": {
            "size_ratio": result.baseline_size_bytes / row.size_bytes if row.size_bytes else None,
            "speedup": row.speedup
            if row.speedup is not None
            else (result.baseline_p50_ms / row.p50_ms if row.p50_ms else None),
            "delta": row.delta,
        },
        "candidate_onnx": str(store.fetch(cand.onnx, home / "work" / "cache")) if cand.onnx else None,
        "baseline_onnx": str(baseline_onnx),
        "input_shape": _input_shape(baseline_onnx),
    }


def _input_shape(onnx: Path) -> list[int]:
    """One example's input shape (the model's first input, batch dimension left out)."""
    import onnxruntime as ort

    shape = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    return [int(d) for d in shape[1:]]


def compare(gpu: dict[str, Any], cpu: dict[str, Any]) -> list[str]:
    """What differs between the two runs beyond the tolerances (empty: they agree)."""
    problems = []
    if gpu["promoted"] != cpu["promoted"]:
        problems.append(f"promoted {gpu['promoted']!r} on cuda, {cpu['promoted']!r} on cpu")
    for name, tol in TOLERANCES.items():
        a, b = gpu["ratios"][name], cpu["ratios"][name]
        if a is None or b is None:
            problems.append(f"{name}: missing ({a} on cuda, {b} on cpu)")
            continue
        off = abs(a - b) if name == "delta" else abs(a - b) / max(abs(b), 1e-12)
        if off > tol:
            problems.append(f"{name}: {a:.4g} on cuda, {b:.4g} on cpu (off by {off:.3g} > {tol})")
    return problems


def measure_cuda_profile(onnx: str | None, shape: list[int] | None) -> dict[str, Any]:
    """``onnx`` measured on the shipped CUDA execution-provider profile, here (its ``remote`` agent is
    this machine), by squeezeflow's benchmark worker in its own process; or why it cannot be."""
    from squeezeflow.spec.devices import profile_library

    if onnx is None or shape is None:
        return {"error": "no model to measure"}
    p = profile_library()[CUDA_PROFILE]
    request = {
        "model": onnx,
        "input_shape": shape,
        "profile": p.name,
        "runtime": p.runtime,
        "execution_provider": p.execution_provider,
        "intra_op_threads": p.intra_op_threads,
        "inter_op_threads": p.inter_op_threads,
        "batch_size": p.batch_size,
        "warmup": p.warmup,
        "iterations": p.iterations,
        "target_cv": 0.05,
        "max_rounds": 3,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "squeezeflow.devices.worker", json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        return {"error": " | ".join(proc.stderr.strip().splitlines()[-2:])}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {k: result[k] for k in ("p50_ms", "p95_ms", "provider") if k in result} or result


def refused_here() -> str:
    """The refusal a ``training.device: cuda`` job gets on this machine (no GPU)."""
    from squeezeflow.errors import DeviceUnavailableError
    from squeezeflow.training_device import resolve_training

    try:
        resolve_training("cuda")
    except DeviceUnavailableError as err:
        return f"exit {err.exit_code}: {err}"
    return "not refused: this machine has a GPU"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    ap.add_argument("--tiny", action="store_true", help="the tiny CPU version even where there is a GPU")
    ap.add_argument("--budget", type=float, default=150.0, help="search seconds per run (default 150)")
    ap.add_argument("--epochs", type=int, default=2, help="recovery epochs (default 2)")
    ap.add_argument("--max-steps", type=int, default=40, help="batches per epoch (default 40; 0: all)")
    ap.add_argument("--prune-ratio", type=float, default=0.5)
    ap.add_argument("--max-drop", type=float, default=0.02, help="gate tolerance (absolute)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--reference-epochs", type=int, default=None, help="epochs of the reference model")
    ap.add_argument("--model-file", help="a state_dict to use instead of the bench's reference model")
    ap.add_argument("--factory", help="its factory, module:callable (default: the zoo model's)")
    ap.add_argument("--data", help="a squeezeflow.npz/v1 dataset directory (default: Animal-MNIST)")
    ap.add_argument("--workdir", type=Path, default=ROOT, help="where the jobs run (wiped first)")
    ap.add_argument("--out", type=Path, default=OUT, help="the results JSON")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    has_gpu, seen = gpu_here()
    tiny = args.tiny or not has_gpu
    if tiny:
        args.epochs, args.max_steps, args.budget = 1, min(args.max_steps or 3, 3), min(args.budget, 60.0)
    devices = ["cuda", "cpu"] if has_gpu and not tiny else ["cpu"]
    print(f"GPU: {seen}")
    if not has_gpu:
        print("no GPU: the tiny version runs, on the CPU only (the cuda run and the CUDA profile need one)")
    plan = {
        "gpu": seen,
        "tiny": tiny,
        "devices": devices,
        "recipe": "prune-kd" if tiny else TRAINED,
        "budget_s": args.budget,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "precision": args.precision,
        "cuda_profile": CUDA_PROFILE if has_gpu and not tiny else None,
    }
    print("plan: " + json.dumps(plan))
    if args.dry_run:
        return 0
    state_dict, factory, data = reference_inputs(args, tiny)
    runs: dict[str, dict[str, Any]] = {}
    for device in devices:
        doc = job_doc(f"gpu-check-{device}", state_dict, factory, data, device, args, tiny)
        runs[device] = run_one(doc, args.workdir / device)
        r = runs[device]
        print(
            f"{device:>4}: optimize stage {r['optimize_seconds']:.1f} s "
            f"(training {r['training_seconds'] or 0:.1f} s on {r['trained_on']} at {r['precision']}), "
            f"job {r['job_seconds']:.1f} s; "
            f"promoted {r['promoted'] or 'nothing'}; ratios "
            + ", ".join(f"{k} {v:.4g}" if v is not None else f"{k} -" for k, v in r["ratios"].items())
        )
    report: dict[str, Any] = {"plan": plan, "runs": runs}
    problems: list[str] = []
    if "cuda" in runs:
        problems = compare(runs["cuda"], runs["cpu"])
        print(
            "cuda vs cpu: "
            + ("the same within " + json.dumps(TOLERANCES) if not problems else "; ".join(problems))
        )
        shape = runs["cuda"]["input_shape"]
        report["cuda_profile"] = {
            "profile": CUDA_PROFILE,
            "baseline": measure_cuda_profile(runs["cuda"]["baseline_onnx"], shape),
            "candidate": measure_cuda_profile(runs["cuda"]["candidate_onnx"], shape),
        }
        print(f"{CUDA_PROFILE} (CUDAExecutionProvider, measured here): {json.dumps(report['cuda_profile'])}")
    else:
        report["cuda_refusal"] = refused_here()
        print(f"training.device cuda here: {report['cuda_refusal']}")
    report["problems"] = problems
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
