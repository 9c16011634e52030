"""squeezeflow against peer tools, on the same models, data, tolerance and device profile.

    .venv/bin/python bench/run.py [--models resnet18,compact,minilm,minilm_hf] [--quick]

For each reference model (trained once by the project's own scripts, the CNNs on Animal-MNIST and the
MiniLM classifier on Rotten Tomatoes, and cached under .squeezeflow/bench/), build one compressed ONNX
model per method:

  fp32_ort        the baseline exported to ONNX (the reference every ratio is taken against)
  squeezeflow     the product: a job spec through ``squeezeflow.runner.run_job``; its promoted model
  ort_dynamic     ONNX Runtime ``quantize_dynamic``
  ort_static      ONNX Runtime ``quantize_static`` (QDQ, per-channel, default types)
  torch_pruning   Torch-Pruning magnitude pruning to ~4x fewer MACs + plain fine-tuning
  nncf_ac         NNCF ``quantize_with_accuracy_control`` (in bench/.venv-peers)
  inc_ac          Intel Neural Compressor accuracy-aware PTQ (``autotune``, in bench/.venv-peers)

then measure every row the same way: top-1 accuracy of the ONNX file on the held-out test split in
ONNX Runtime, file size, p50 latency from squeezeflow's benchmark worker (its own process per model
and round, 2 intra-op threads, batch 1; rounds interleaved across rows), and the wall time of the
compression. Prints a table and writes bench/out/results.json (rows) and bench/out/meta.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / ".squeezeflow" / "bench"
OUT = REPO / "bench" / "out"
PEERS = REPO / "bench" / "peers"
PEERS_PY = REPO / "bench" / ".venv-peers" / "bin" / "python"
MAIN_PY = Path(sys.executable)

THREADS = 2
MAX_DROP = 0.01
METRIC = "top1_accuracy"
METHODS = ["fp32_ort", "squeezeflow", "ort_dynamic", "ort_static", "torch_pruning", "nncf_ac", "inc_ac"]


@dataclass(frozen=True)
class BenchModel:
    key: str  # what --models names
    zoo: str  # the zoo name: a squeezeflow.zoo.cnn factory, "minilm_rt", or "minilm_hf"
    text: bool = False  # token-id inputs (Rotten Tomatoes) instead of Animal-MNIST images
    audio: bool = False  # MFCC inputs (spoken digits, held-out speakers) instead of Animal-MNIST images
    hf: bool = False  # a Hugging Face directory (model.format: huggingface), not a state_dict + factory

    @property
    def factory(self) -> str:
        if self.hf:
            return "huggingface"
        return "squeezeflow.zoo.minilm:minilm_classifier" if self.text else f"squeezeflow.zoo.cnn:{self.zoo}"


MODELS = {
    "resnet18": BenchModel("resnet18", "resnet18_style"),
    "compact": BenchModel("compact", "compact_cnn"),
    "minilm": BenchModel("minilm", "minilm_rt", text=True),
    # all-MiniLM-L6-v2 fine-tuned as BertForSequenceClassification, saved with save_pretrained, on the
    # same reviews as raw text: the job is `model.format: huggingface` on a squeezeflow.text/v1 dataset
    # (the peers and the table read the token-id dataset of the same split, tokenized the same way)
    "minilm_hf": BenchModel("minilm_hf", "minilm_hf", text=True, hf=True),
    # Keyword spotting: a residual CNN over the MFCCs of the Free Spoken Digit recordings, tested on a
    # speaker it never heard (squeezeflow.datasets.spoken_digits; issue 19's audio task).
    "audio": BenchModel("audio", "kws_resnet", audio=True),
}
# minilm_hf's fine-tuning epochs and, for a smoke run, the rows kept of each split (None: all)
HF_EPOCHS = 2
HF_ROWS: int | None = None
# Caps on the NNCF and INC peers' accuracy-control loops for the text model, where one evaluation of
# the 91 MB model on the whole validation split takes ~20 s here (uncapped, nncf_ac took 539 s and
# inc_ac 145 s): accuracy-restorer iterations / tuning trials, the validation rows their loops
# evaluate on (a seeded, class-stratified subset; the reported test accuracy is still computed here
# on the full test split), and NNCF's ranking subset (its default is 300 rows, ranked once per
# quantizer group, ~48 groups). Measured with 1 thread on a shared machine: nncf_ac 227 s (ranking
# 127 s of it), inc_ac 80 s; with the bench's 2 threads expect roughly 120-150 s and 60 s.
TEXT_PEER_TRIALS = 5
TEXT_NNCF_ITERATIONS = 2  # a third iteration gained nothing in either measured run
TEXT_PEER_VAL_ROWS = 500
TEXT_NNCF_RANKING_ROWS = 100
# Methods that do not apply to a model, and why (the row is kept, with the reason).
NOT_APPLICABLE = {
    (
        "minilm",
        "torch_pruning",
    ): "not run: the peer script prunes CNN channels to a MACs target; Torch-Pruning "
    "has no text-model recipe of its own (squeezeflow uses it with head grouping)",
    ("minilm_hf", "torch_pruning"): "not run: the peer script loads a state_dict with a zoo factory",
    ("minilm_hf", "inc_ac"): "not run: the peer script loads a state_dict with a zoo factory",
}


@dataclass(frozen=True)
class Mode:
    name: str
    sf_max_trials: int
    sf_max_seconds: dict[str, float]
    sf_finetune_epochs: int
    sf_patience: int
    tp_epochs: int
    nncf_max_iter: int | None
    inc_max_trials: int
    warmup: int
    iterations: int
    rounds: int
    peer_timeout: float


FULL = Mode(
    name="full",
    sf_max_trials=10,
    # Budgets a nightly job would give, the whole bench (three models, every peer) well within an hour
    # on two cores. resnet18: 10 minutes; the search keeps its budget now (trials size their recovery to
    # the time left), and with 5 minutes its round 0 (paired measurements of four int8 variants of a
    # 45 MB model, ~2.5 min) left its first pruning trial 3 of 18 recovery epochs. compact: 6 minutes,
    # enough for its three opening pruning trials (a light one is its winner). The text model runs its
    # three default candidates, the last a short quantization-aware pass (see job_doc).
    sf_max_seconds={"resnet18": 600.0, "compact": 360.0, "minilm": 480.0, "minilm_hf": 480.0, "audio": 360.0},
    sf_finetune_epochs=6,
    sf_patience=3,
    tp_epochs=4,
    nncf_max_iter=None,
    inc_max_trials=100,
    warmup=50,
    iterations=300,
    rounds=3,
    peer_timeout=1500.0,
)
QUICK = Mode(
    name="quick",
    sf_max_trials=5,
    sf_max_seconds={"resnet18": 150.0, "compact": 90.0, "minilm": 120.0, "minilm_hf": 120.0, "audio": 90.0},
    sf_finetune_epochs=1,
    sf_patience=1,
    tp_epochs=1,
    nncf_max_iter=2,
    inc_max_trials=2,
    warmup=20,
    iterations=100,
    rounds=1,
    peer_timeout=600.0,
)

log = logging.getLogger("bench")


# -- data and models ----------------------------------------------------------------------------------
def prepare_data(m: BenchModel) -> Path:
    """The model's dataset in the pipeline's format (built once, hash-checked sources)."""
    if m.text:
        from squeezeflow.datasets.rotten_tomatoes import prepare_rotten_tomatoes_v1

        return prepare_rotten_tomatoes_v1(ROOT / "data" / "rotten-tomatoes-v1")
    if m.audio:
        from squeezeflow.datasets.spoken_digits import prepare_spoken_digits

        return prepare_spoken_digits(ROOT / "data" / "spoken-digits")
    from squeezeflow.datasets.animal_mnist import prepare_animal_mnist

    return prepare_animal_mnist(ROOT / "data" / "animal-mnist")


def _train_minilm(out: Path) -> None:
    """Fine-tune all-MiniLM-L6-v2 on the reviews (2 epochs), or reuse the same run cached by the tests."""
    from squeezeflow.datasets.rotten_tomatoes import prepare_rotten_tomatoes
    from squeezeflow.zoo.minilm_train import train_minilm_reference

    data = prepare_rotten_tomatoes(ROOT / "data" / "rotten-tomatoes")
    train_minilm_reference(data, out, epochs=2, seed=0)


def text_data(m: BenchModel, data: Path) -> Path:
    """The data the squeezeflow job reads: minilm_hf's raw text (of the same split as ``data``), else
    ``data`` itself."""
    if not m.hf:
        return data
    from minilm_hf import prepare_text_data

    name = "rotten-tomatoes-text" if HF_ROWS is None else f"rotten-tomatoes-text-{HF_ROWS}"
    return prepare_text_data(ROOT / "data" / name, data, rows=HF_ROWS)


def _train_minilm_hf(console: Any) -> tuple[Path, dict[str, Any]]:
    """The Hugging Face MiniLM directory (fine-tuned on first use, ~the time of minilm_rt's training)."""
    from minilm_hf import RECORD, train_minilm_hf

    from squeezeflow.datasets.rotten_tomatoes import prepare_rotten_tomatoes

    out = ROOT / "models" / "minilm_hf"
    cached = (out / RECORD).is_file()
    if not cached:
        console.print("[bold]fine-tuning minilm_hf[/] (first run only; ~10-25 min on 2 cores)")
    t0 = time.perf_counter()
    data = prepare_rotten_tomatoes(ROOT / "data" / "rotten-tomatoes")
    record = train_minilm_hf(data, out, epochs=HF_EPOCHS, seed=0)
    return out, {**record, "cached": cached, "wall_seconds": time.perf_counter() - t0}


def prepare_model(m: BenchModel, data: Path, console: Any) -> tuple[Path, dict[str, Any]]:
    """Train (or reuse) the reference model; returns the state_dict (minilm_hf: the checkpoint folder)
    and the training record."""
    from squeezeflow.zoo.train import train_reference_model

    if m.hf:
        return _train_minilm_hf(console)

    out = ROOT / "models" / f"{m.zoo}.pt"
    tests_copy = REPO / ".squeezeflow" / "test-cache" / "minilm_rt-e2.pt"
    if m.text and not out.is_file() and tests_copy.is_file() and tests_copy.with_suffix(".json").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)  # the tests' copy: same function, data, epochs, seed
        shutil.copyfile(tests_copy.with_suffix(".json"), out.with_suffix(".json"))
        shutil.copyfile(tests_copy, out)
    cached = out.is_file() and out.with_suffix(".json").is_file()
    if not cached:
        console.print(
            f"[bold]training {m.zoo}[/] (first run only; resnet18_style, minilm_rt: ~10-25 min on 2 cores)"
        )
    t0 = time.perf_counter()
    if m.text:
        _train_minilm(out)
    else:
        train_reference_model(m.zoo, data, out)
    record = json.loads(out.with_suffix(".json").read_text())
    record["cached"] = cached
    record["wall_seconds"] = time.perf_counter() - t0
    return out, record


def load_module(m: BenchModel, state_dict: Path) -> Any:
    import importlib

    import torch

    if m.hf:
        from squeezeflow.models.huggingface import load_huggingface_model

        return load_huggingface_model(str(state_dict), state_dict)

    module_name, _, attr = m.factory.partition(":")
    model = getattr(importlib.import_module(module_name), attr)()
    model.load_state_dict(torch.load(state_dict, map_location="cpu", weights_only=True))
    return model.eval()


# -- methods ------------------------------------------------------------------------------------------
@dataclass
class Built:
    """One method's output before measurement."""

    method: str
    onnx: Path | None
    seconds: float | None
    note: str | None = None
    error: str | None = None
    extra: dict[str, Any] | None = None


def run_peer(method: str, python: Path, args: list[str], log_path: Path, out: Path, timeout: float) -> Built:
    """Run one peer script in its own process; its result is the JSON on its last stdout line."""
    if not python.exists():
        return Built(
            method, None, None, error=f"{python.relative_to(REPO)} missing: run `make bench` to set it up"
        )
    out.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [str(python), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired as err:
        log_path.write_text(f"$ {python} {' '.join(args)}\n--- timed out; stderr\n{err.stderr!s}")
        return Built(method, None, time.perf_counter() - t0, error=f"timed out after {timeout:.0f}s")
    seconds = time.perf_counter() - t0
    log_path.write_text(f"$ {python} {' '.join(args)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    if proc.returncode != 0 or not out.is_file():
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        why = " | ".join(lines[-3:])[-600:] or f"exit code {proc.returncode}"
        return Built(method, None, seconds, error=f"{why} (log: {log_path.relative_to(REPO)})")
    extra: dict[str, Any] = {}
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            extra = json.loads(line)
            break
    return Built(method, out, seconds, extra=extra)


def build_fp32(m: BenchModel, state_dict: Path, shape: list[int], work: Path) -> Built:
    from squeezeflow.models.sources import export_onnx

    t0 = time.perf_counter()
    dtype = np.int64 if m.text else np.float32
    path = export_onnx(load_module(m, state_dict), shape, work / "fp32.onnx", dtype=dtype)
    return Built("fp32_ort", path, time.perf_counter() - t0, note="baseline exported to ONNX")


def job_doc(m: BenchModel, state_dict: Path, data: Path, mode: Mode) -> dict[str, Any]:
    from squeezeflow.search.recipes import default_recipes

    return {
        "apiVersion": "squeezeflow/v1",
        "name": f"bench-{m.key}-{mode.name}",
        "model": (
            {"format": "huggingface", "uri": str(state_dict)}
            if m.hf
            else {"format": "state_dict", "uri": str(state_dict), "factory": m.factory}
        ),
        "data": {"uri": str(text_data(m, data))},
        "task": {"kind": "classification", "metric": METRIC},
        "tolerance": {"mode": "absolute", "max_drop": MAX_DROP},
        "devices": [
            {
                "name": "cpu-2t",
                "intra_op_threads": THREADS,
                "batch_size": 1,
                "warmup": mode.warmup,
                "iterations": mode.iterations,
            }
        ],
        "objective": "latency",
        "search": {
            # The text model: its default candidates only (trimmed padding with int8, trimmed float, and
            # vocabulary pruning + a short quantization-aware pass + int8). One pruning + distillation
            # trial costs about 7 minutes more (and lost 3 points in 2 epochs); dropping 2 or 3 of the 6
            # layers with hidden-state distillation (recipes.TEXT_DEPTH_RECIPE) lost 1.7-2.1 points after
            # 2 epochs (about 10 minutes), see bench/README.md.
            "max_trials": len(default_recipes("int64")) if m.text else mode.sf_max_trials,
            "max_seconds": mode.sf_max_seconds[m.key],
            "patience": mode.sf_patience,
            "seed": 0,
            "space": text_space(mode) if m.text else {"finetune_epochs": mode.sf_finetune_epochs},
        },
        "registry": {"model_name": f"bench-{m.key}", "alias": "champion"},
    }


def text_space(mode: Mode) -> dict[str, Any]:
    """The text model's search space: light head/FFN pruning (a 50% prune lost 3.8 points after one
    distillation epoch), two distillation epochs of recovery (a MiniLM epoch costs minutes on two
    cores), then dynamic int8 or float."""
    return {
        "prune_ratio": [0.2, 0.4],
        "distill": [True],
        "quantize": ["int8", "none"],
        "finetune_epochs": 1 if mode.name == "quick" else 2,
        "max_recovery_scale": 1.0,
    }


def build_squeezeflow(m: BenchModel, state_dict: Path, data: Path, mode: Mode, console: Any) -> Built:
    """The product end to end (embedded SQLite MLflow, local artifacts); a fresh job every bench run."""
    import yaml

    from squeezeflow.results import CandidateResult
    from squeezeflow.runner import run_job
    from squeezeflow.spec.load import parse_spec
    from squeezeflow.stages import Settings
    from squeezeflow.store.artifacts import open_store

    home = ROOT / m.key / "squeezeflow"
    shutil.rmtree(home, ignore_errors=True)  # recorded stage results would replay the last run
    home.mkdir(parents=True)
    doc = job_doc(m, state_dict, data, mode)
    (home / "job.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    spec = parse_spec(doc, source=str(home / "job.yaml"), base_dir=REPO)
    settings = Settings(
        artifacts=str(home / "artifacts"),
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        workdir=home / "work",
    )
    t0 = time.perf_counter()
    try:
        result = run_job(spec, settings, progress=console.is_terminal)
    except Exception as err:
        log.exception("squeezeflow job failed")
        return Built("squeezeflow", None, time.perf_counter() - t0, error=f"{type(err).__name__}: {err}")
    seconds = time.perf_counter() - t0
    (home / "result.json").write_text(result.model_dump_json(indent=2))
    tried = f"{len(result.candidates)} candidates"
    if result.promotion.promoted:
        key = result.promotion.candidate_key
        note = f"promoted {result.promotion.candidate_label} ({tried})"
    else:
        passing = [c for c in result.candidates if c.gate == "pass" and c.status == "ok"]
        if not passing:
            return Built(
                "squeezeflow",
                None,
                seconds,
                error=f"nothing promoted and no candidate passed the gate ({tried}): "
                f"{result.promotion.reason}",
            )
        best = min(passing, key=lambda c: c.p50_ms if c.p50_ms is not None else float("inf"))
        key = best.candidate_key
        note = f"NOT promoted ({result.promotion.reason}); best gate-passing candidate {best.label} ({tried})"
    store = open_store(settings.artifacts)
    record = store.read_record("optimize", key or "")
    if record is None:
        return Built("squeezeflow", None, seconds, error=f"no optimize record for candidate {key}")
    cand = CandidateResult.model_validate(record)
    assert cand.onnx is not None
    path = store.fetch(cand.onnx, home / "work" / "cache")
    dest = home / "squeezeflow.onnx"
    shutil.copyfile(path, dest)
    extra = {
        "candidates": [
            {
                "label": c.label,
                "status": c.status,
                "metric": c.metric,
                "delta": c.delta,
                "size_bytes": c.size_bytes,
                "p50_ms": c.p50_ms,
                "gate": c.gate,
                "note": c.note if c.status == "ok" else (c.error or "")[:200],
            }
            for c in result.candidates
        ],
        "job_seconds": result.seconds,
    }
    return Built("squeezeflow", dest, seconds, note=note, extra=extra)


def build_all(
    m: BenchModel,
    state_dict: Path,
    data: Path,
    shape: list[int],
    mode: Mode,
    methods: list[str],
    console: Any,
) -> list[Built]:
    work = ROOT / m.key / "peers"
    logs = ROOT / m.key / "logs"
    work.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    fp32 = build_fp32(m, state_dict, shape, work)
    assert fp32.onnx is not None
    factory = m.factory
    drop = ["--max-drop", str(MAX_DROP)]
    main = (MAIN_PY, mode.peer_timeout)
    peers_venv = (PEERS_PY, mode.peer_timeout)
    nncf_max_iter, inc_trials = mode.nncf_max_iter, mode.inc_max_trials
    nncf_caps: list[str] = []
    inc_caps: list[str] = []
    if m.text:  # one evaluation of the 91 MB model on val takes ~20 s here: cap the tuning loops
        nncf_max_iter, inc_trials = (
            min(nncf_max_iter or TEXT_NNCF_ITERATIONS, TEXT_NNCF_ITERATIONS),
            min(inc_trials, TEXT_PEER_TRIALS),
        )
        subset = ["--val-subset", str(TEXT_PEER_VAL_ROWS)]
        nncf_caps = [*subset, "--ranking-subset-size", str(TEXT_NNCF_RANKING_ROWS)]
        inc_caps = subset
    nncf_iter = [] if nncf_max_iter is None else ["--max-iter", str(nncf_max_iter)]
    specs: dict[str, tuple[tuple[Path, float], list[str]]] = {
        "ort_dynamic": (main, ["ort_peer.py", "dynamic", str(fp32.onnx), str(data)]),
        "ort_static": (main, ["ort_peer.py", "static", str(fp32.onnx), str(data)]),
        "torch_pruning": (
            main,
            ["tp_peer.py", str(state_dict), factory, str(data), "--epochs", str(mode.tp_epochs)],
        ),
        "nncf_ac": (
            peers_venv,
            ["nncf_peer.py", str(fp32.onnx), str(data), *drop, *nncf_iter, *nncf_caps],
        ),
        "inc_ac": (
            peers_venv,
            [
                "inc_peer.py",
                str(state_dict),
                factory,
                str(data),
                *drop,
                "--max-trials",
                str(inc_trials),
                *inc_caps,
            ],
        ),
    }
    built = [fp32]
    for method in methods:
        if method == "fp32_ort":
            continue
        console.print(f"[bold]{m.key}[/]: {method} ...")
        if (m.key, method) in NOT_APPLICABLE:
            built.append(Built(method, None, None, error=NOT_APPLICABLE[(m.key, method)]))
            continue
        if method == "squeezeflow":
            b = build_squeezeflow(m, state_dict, data, mode, console)
        else:
            (python, timeout), args = specs[method]
            out = work / f"{method}.onnx"
            script, *rest = args
            b = run_peer(method, python, _with_out(script, rest, out), logs / f"{method}.log", out, timeout)
            b.note = peer_note(method, b, mode)
        status = f"[red]error[/]: {b.error}" if b.error else f"done in {b.seconds:.1f}s"
        console.print(f"[bold]{m.key}[/]: {method} {status}")
        built.append(b)
    return built


def peer_note(method: str, b: Built, mode: Mode) -> str | None:
    """What a reader of the table needs to know about a peer's row."""
    x = b.extra or {}
    if method == "torch_pruning" and x.get("macs_after"):
        return (
            f"MACs {x['macs_before'] / x['macs_after']:.1f}x fewer, {mode.tp_epochs} epochs plain fine-tuning"
        )
    if method == "inc_ac" and b.error is None:
        return "PT2E int8, exported by torch.onnx: float weights + Q/DQ in the graph (size is not int8)"
    return None


def _with_out(script: str, rest: list[str], out: Path) -> list[str]:
    """``script`` with its positional inputs, the output path, then its options."""
    positional: list[str] = []
    options: list[str] = []
    it = iter(rest)
    for a in it:
        if a.startswith("--"):
            options += [a, next(it)]
        else:
            positional.append(a)
    return [str(PEERS / script), *positional, str(out), *options]


# -- measurement --------------------------------------------------------------------------------------
def test_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    from squeezeflow.runtime import predict_logits

    return float(np.mean(np.argmax(predict_logits(path, x, threads=THREADS), axis=1) == y))


def latency(path: Path, shape: list[int], mode: Mode) -> dict[str, Any]:
    """One round of squeezeflow's benchmark worker on ``path``, in its own process."""
    request = {
        "model": str(path),
        "input_shape": shape,
        "intra_op_threads": THREADS,
        "inter_op_threads": 1,
        "batch_size": 1,
        "warmup": mode.warmup,
        "iterations": mode.iterations,
        # the worker repeats rounds of `iterations` until their medians agree (2 to max_rounds)
        "target_cv": 0.05,
        "max_rounds": 3,
    }
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    proc = subprocess.run(
        [str(MAIN_PY), "-m", "squeezeflow.devices.worker", json.dumps(request)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(" | ".join(proc.stderr.strip().splitlines()[-3:]))
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure(
    model_key: str, built: list[Built], data: Path, shape: list[int], mode: Mode, console: Any
) -> list[dict[str, Any]]:
    from squeezeflow.data import load_dataset

    test = load_dataset(data).split("test")
    ok = [b for b in built if b.onnx is not None and b.error is None]
    p50s: dict[str, list[float]] = {b.method: [] for b in ok}
    errors: dict[str, str] = {}
    cvs: dict[str, list[float]] = {b.method: [] for b in ok}
    for r in range(mode.rounds):  # interleaved rounds: slow drifts in machine load hit every row alike
        console.print(f"[bold]{model_key}[/]: latency round {r + 1}/{mode.rounds}")
        for b in ok:
            if b.method in errors:
                continue
            try:
                assert b.onnx is not None
                res = latency(b.onnx, shape, mode)
                p50s[b.method].append(res["p50_ms"])
                cvs[b.method].append(res.get("cv_p50", float("nan")))
            except Exception as err:
                errors[b.method] = f"benchmark failed: {err}"
    rows: list[dict[str, Any]] = []
    base_metric: float | None = None
    base_size: int | None = None
    base_p50: float | None = None
    for b in built:
        row: dict[str, Any] = {
            "model": model_key,
            "method": b.method,
            "metric_name": METRIC,
            "baseline_metric": None,
            "metric": None,
            "delta": None,
            "size_bytes": None,
            "p50_ms": None,
            "optimize_seconds": None if b.seconds is None else round(b.seconds, 2),
        }
        if b.onnx is not None and b.error is None:
            row["metric"] = test_accuracy(b.onnx, test.x, test.y)
            row["size_bytes"] = b.onnx.stat().st_size
            if p50s.get(b.method):
                row["p50_ms"] = round(float(np.median(p50s[b.method])), 4)
                row["p50_rounds_ms"] = [round(v, 4) for v in p50s[b.method]]
                row["p50_cv_in_rounds"] = [round(v, 4) for v in cvs[b.method]]
        if b.method == "fp32_ort":
            base_metric, base_size, base_p50 = row["metric"], row["size_bytes"], row["p50_ms"]
        row["baseline_metric"] = base_metric
        if row["metric"] is not None and base_metric is not None:
            row["delta"] = round(row["metric"] - base_metric, 6)
            row["within_tolerance"] = row["delta"] >= -MAX_DROP - 1e-9
        if row["size_bytes"] and base_size:
            row["size_ratio"] = round(base_size / row["size_bytes"], 3)
        if row["p50_ms"] and base_p50:
            row["speedup"] = round(base_p50 / row["p50_ms"], 3)
        if b.note:
            row["note"] = b.note
        error = b.error or errors.get(b.method)
        if error:
            row["error"] = error
        if b.extra:
            row["details"] = b.extra
        rows.append(row)
    return rows


# -- output -------------------------------------------------------------------------------------------
def table(rows: list[dict[str, Any]], title: str) -> Any:
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for col, just in [
        ("model", "left"),
        ("method", "left"),
        ("test acc", "right"),
        ("Δ", "right"),
        ("tol", "center"),
        ("size MB", "right"),
        ("size x", "right"),
        ("p50 ms", "right"),
        ("speedup", "right"),
        ("opt s", "right"),
        ("note / error", "left"),
    ]:
        t.add_column(col, justify=just, max_width=72 if col == "note / error" else None)  # type: ignore[arg-type]

    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in rows:
        tol = r.get("within_tolerance")
        mark = "-" if tol is None else ("[green]ok[/]" if tol else "[red]no[/]")
        text = f"[red]{r['error']}[/]" if r.get("error") else r.get("note", "")
        t.add_row(
            r["model"],
            r["method"],
            f(r["metric"], ".4f"),
            f(r["delta"], "+.4f"),
            mark,
            f(None if r["size_bytes"] is None else r["size_bytes"] / 1e6, ".2f"),
            f(r.get("size_ratio"), ".2f"),
            f(r["p50_ms"], ".3f"),
            f(r.get("speedup"), ".2f"),
            f(r["optimize_seconds"], ".1f"),
            text,
        )
    return t


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("squeezeflow", "torch", "onnxruntime", "onnx", "torch-pruning", "optuna"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    if PEERS_PY.exists():
        code = (
            "import json;from importlib.metadata import version as v;"
            "print(json.dumps({p: v(p) for p in ('nncf','neural-compressor','torchao','onnxruntime')}))"
        )
        proc = subprocess.run([str(PEERS_PY), "-c", code], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            out.update({f"peers:{k}": val for k, val in json.loads(proc.stdout).items()})
    return out


def main(argv: list[str] | None = None) -> int:
    global HF_EPOCHS, HF_ROWS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models", default="resnet18,compact,minilm", help=f"comma-separated, of {sorted(MODELS)}"
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer epochs, smaller budgets")
    ap.add_argument(
        "--methods", default=",".join(METHODS), help="comma-separated subset of the methods (fp32_ort always)"
    )
    ap.add_argument(
        "--append",
        action="store_true",
        help="keep the other models' rows already in bench/out/results.json (re-run some models only)",
    )
    ap.add_argument("--hf-epochs", type=int, default=HF_EPOCHS, help="minilm_hf: fine-tuning epochs")
    ap.add_argument(
        "--hf-rows", type=int, default=None, help="minilm_hf smoke run: keep the first N rows of each split"
    )
    args = ap.parse_args(argv)
    HF_EPOCHS, HF_ROWS = args.hf_epochs, args.hf_rows
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in MODELS]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad_methods = [m for m in methods if m not in METHODS]
    if unknown or bad_methods or not keys:
        ap.error(f"unknown models {unknown} / methods {bad_methods}; models: {sorted(MODELS)}")
    mode = QUICK if args.quick else FULL

    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # logs and CI: do not squeeze the table into 80 columns
        console = Console(width=200)
    OUT.mkdir(parents=True, exist_ok=True)
    ROOT.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.FileHandler(OUT / "bench.log", mode="w")],
    )
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    earlier: dict[str, Any] = {}
    if args.append and (OUT / "results.json").is_file():
        rows = [r for r in json.loads((OUT / "results.json").read_text()) if r["model"] not in keys]
        if (OUT / "meta.json").is_file():
            earlier = json.loads((OUT / "meta.json").read_text()).get("models", {})
    meta: dict[str, Any] = {
        "mode": mode.name,
        "models": {k: v for k, v in earlier.items() if k not in keys},
        "tolerance": {"mode": "absolute", "max_drop": MAX_DROP},
        "device": {"intra_op_threads": THREADS, "batch_size": 1, "warmup": mode.warmup},
        "iterations": mode.iterations,
        "rounds": mode.rounds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": versions(),
    }
    for key in keys:
        m = MODELS[key]
        tm = time.perf_counter()
        data = prepare_data(m)
        shape = json.loads((data / "dataset.json").read_text())["input_shape"]
        state_dict, record = prepare_model(m, data, console)
        console.print(
            f"[bold]{key}[/]: {m.zoo} {'cached' if record['cached'] else 'trained'} "
            f"(training took {record['seconds']:.0f}s, test accuracy {record['test_accuracy']:.4f})"
        )
        built = build_all(m, state_dict, data, shape, mode, methods, console)
        model_rows = measure(key, built, data, shape, mode, console)
        rows.extend(model_rows)
        meta["models"][key] = {
            "factory": "huggingface" if m.hf else m.factory,
            "data": str(data),
            "training": record,
            "seconds": time.perf_counter() - tm,
        }
        (OUT / "results.json").write_text(json.dumps(rows, indent=2) + "\n")  # partial results survive
    meta["seconds"] = time.perf_counter() - t0
    (OUT / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (OUT / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    title = (
        f"squeezeflow vs peers ({mode.name} mode; held-out test splits, tolerance -{MAX_DROP} abs; "
        f"ORT CPU {THREADS} threads, batch 1)"
    )
    console.print(table(rows, title))
    console.print(f"wrote {OUT.relative_to(REPO)}/results.json in {meta['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
