"""Benchmark worker: measures one model in its own process (so one model's arenas, caches and threads
never skew another's numbers). Reads a JSON request from argv, prints a JSON result.

    python -m squeezeflow.devices.worker '{"model": "m.onnx", "input_shape": [1, 28, 28], ...}'

Request keys: ``model`` (a local path), ``input_shape`` (one sample, no batch dimension),
``intra_op_threads``, ``inter_op_threads``, ``batch_size``, ``warmup``, ``iterations``; optional:
``profile`` (its name, for messages), ``runtime`` (``onnxruntime`` or ``pytorch_eager``),
``execution_provider`` (default ``CPUExecutionProvider``), ``extra_batch_sizes``, ``torch_source`` (the
``ModelSource`` that loads a PyTorch ``model``, for ``pytorch_eager``), ``pin_cpus``, ``target_cv``,
``max_rounds``, ``paired_with`` (a local path to the baseline's ONNX file: see `paired_rounds`),
``speedup_confidence`` (default `SPEEDUP_CONFIDENCE`), ``screen_slower_than`` (paired only: a candidate
that a short screening round already shows this many times slower than the baseline is not measured
further; its result has ``rounds`` 0).

Paired measurement (``paired_with``, ONNX Runtime only): the candidate and the baseline are loaded in this
one process with the same threads and CPUs and timed in alternating blocks, so whatever else the machine
is doing weighs on both alike; the result then also carries ``speedup`` (the baseline's time over the
candidate's, the median over the paired blocks) with its confidence interval (``speedup_low``,
``speedup_high``, distribution-free: `speedup_interval`). The candidate's percentiles come from its
blocks; its peak memory is read before the baseline is loaded.

Inputs are synthetic and seeded: one uniform float array, or, for integer (token-id) inputs, a pool of
`TOKEN_POOL_SIZE` batches whose rows have different real lengths, cycled through run by run, so the
percentiles cover a length distribution (see `token_id_pool`).

A profile this machine cannot measure (an execution provider its ONNX Runtime lacks, or one that
ONNX Runtime did not put first in the session) is refused: in-process, ``measure`` raises
`DeviceUnavailableError`; as a program, the worker prints ``{"error": "device_unavailable",
"message": ...}`` and exits with `EXIT_DEVICE_UNAVAILABLE`. It never measures on another provider.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from squeezeflow.errors import DeviceUnavailableError

EXIT_DEVICE_UNAVAILABLE = 3


# -- memory -------------------------------------------------------------------------------------------
def rss_mb() -> float | None:
    """This process's resident set size now, in MB (10^6 bytes); None where /proc is missing."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (10^6 bytes).

    On Linux this is ``VmHWM`` from /proc/self/status, not ``ru_maxrss``: Linux carries ``ru_maxrss``
    over ``fork`` and ``execve``, so a worker started by a process holding 400 MB would report at
    least 400 MB whatever it loaded. Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6  # reported in kB (KiB)
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


# -- timing -------------------------------------------------------------------------------------------
def timed_rounds(
    run: Callable[[], Any], iterations: int, target_cv: float, max_rounds: int
) -> tuple[np.ndarray, int, float]:
    """Time ``run`` in rounds of ``iterations`` until the round medians agree (their coefficient of
    variation at most ``target_cv``, at least two rounds) or ``max_rounds`` is reached, so a burst of
    load from another process shows up as instability instead of a wrong number. Returns every time in
    ms, the number of rounds and the CV of the round medians."""
    rounds: list[np.ndarray] = []
    while True:
        times = np.empty(iterations, dtype=np.float64)
        for i in range(iterations):
            t0 = time.perf_counter_ns()
            run()
            times[i] = (time.perf_counter_ns() - t0) / 1e6
        rounds.append(times)
        medians = np.array([np.median(r) for r in rounds])
        cv = float(medians.std() / medians.mean()) if len(rounds) > 1 else float("inf")
        if (len(rounds) >= 2 and cv <= target_cv) or len(rounds) >= max_rounds:
            return np.concatenate(rounds), len(rounds), cv


#: Paired blocks per round: each model runs ``iterations / 2`` times a round, so a paired measurement costs
#: what a candidate-only one did (both at least two rounds, at most ``max_rounds``).
PAIRS_PER_ROUND = 10
SPEEDUP_CONFIDENCE = 0.95


def speedup_interval(
    ratios: np.ndarray, confidence: float = SPEEDUP_CONFIDENCE
) -> tuple[float, float, float]:
    """The median of paired speed ratios and a distribution-free ``confidence`` interval for it (order
    statistics, as the sign test gives: `scipy.stats.quantile_test`). No assumption about the shape of
    the timing noise is made; a burst of load that hits a few blocks moves the interval little. The
    bounds are NaN with fewer than six ratios (too few for a 95% interval)."""
    from scipy.stats import quantile_test

    point = float(np.median(ratios))
    ci = quantile_test(ratios, q=point, p=0.5).confidence_interval(confidence_level=confidence)
    return point, float(ci.low), float(ci.high)


@dataclass(frozen=True)
class PairedTimes:
    """What `paired_rounds` measured: each model's times (ms), the per-block speed ratios (the baseline's
    block median over the candidate's), the rounds run, the CV of the candidate's round medians, and the
    speedup with its interval."""

    candidate: np.ndarray
    baseline: np.ndarray
    ratios: np.ndarray
    rounds: int
    cv: float
    speedup: float
    low: float
    high: float


def paired_rounds(
    run_baseline: Callable[[], Any],
    run_candidate: Callable[[], Any],
    iterations: int,
    target_width: float,
    max_rounds: int,
    confidence: float = SPEEDUP_CONFIDENCE,
    screen_slower_than: float | None = None,
) -> PairedTimes:
    """Time the baseline and the candidate interleaved, in rounds of `PAIRS_PER_ROUND` pairs of blocks of
    ``iterations / (2 * PAIRS_PER_ROUND)`` runs (at least one), each pair a baseline block and a candidate
    block (in turn first, so neither always runs on the other's warm caches), until the speedup's
    interval is at most ``target_width`` wide relative to its low end or lies below 1 (measurably
    slower: nothing a narrower interval could change), at least two rounds, or ``max_rounds`` is
    reached.

    ``screen_slower_than``: first one screening round of blocks a fifth as long; when its interval
    already lies below ``1 / screen_slower_than`` (the candidate is that many times slower), that is
    the measurement (``rounds`` 0): a candidate four times slower than the baseline (dynamic int8 on a
    CNN) cost two full rounds of its slow runs before, minutes on a busy machine. Otherwise the screen
    only warmed both up, and the full rounds follow."""
    block = max(1, iterations // (2 * PAIRS_PER_ROUND))
    if screen_slower_than is not None:
        screen = _paired_blocks(run_baseline, run_candidate, max(1, block // 5))
        speedup, low, high = speedup_interval(screen.ratios, confidence)
        if np.isfinite(high) and high < 1 / screen_slower_than:
            return PairedTimes(
                screen.candidate,
                screen.baseline,
                screen.ratios,
                0,
                _cv(screen.candidate_blocks),
                speedup,
                low,
                high,
            )
    cand: list[np.ndarray] = []
    base: list[np.ndarray] = []
    round_medians: list[float] = []
    while True:
        blocks = _paired_blocks(run_baseline, run_candidate, block, start=len(cand))
        cand += blocks.candidate_blocks
        base += blocks.baseline_blocks
        round_medians.append(float(np.median(np.concatenate(cand[-PAIRS_PER_ROUND:]))))
        ratios = np.array([np.median(b) / np.median(c) for b, c in zip(base, cand, strict=True)])
        speedup, low, high = speedup_interval(ratios, confidence)
        rounds = len(round_medians)
        narrow = np.isfinite(low) and low > 0 and high / low - 1 <= target_width
        slower = np.isfinite(high) and high < 1  # never promoted: more rounds would change nothing
        if (rounds >= 2 and (narrow or slower)) or rounds >= max_rounds:
            medians = np.array(round_medians)
            cv = float(medians.std() / medians.mean()) if rounds > 1 else _cv(cand)
            return PairedTimes(
                np.concatenate(cand), np.concatenate(base), ratios, rounds, cv, speedup, low, high
            )


def _cv(blocks: list[np.ndarray]) -> float:
    """The coefficient of variation of the blocks' medians: the spread a measurement of a single round
    (or of a screen) has, in place of the spread of round medians (a JSON record holds no infinity)."""
    medians = np.array([np.median(b) for b in blocks])
    return float(medians.std() / medians.mean()) if len(medians) > 1 and medians.mean() > 0 else 0.0


@dataclass(frozen=True)
class _Blocks:
    candidate_blocks: list[np.ndarray]
    baseline_blocks: list[np.ndarray]

    @property
    def candidate(self) -> np.ndarray:
        return np.concatenate(self.candidate_blocks)

    @property
    def baseline(self) -> np.ndarray:
        return np.concatenate(self.baseline_blocks)

    @property
    def ratios(self) -> np.ndarray:
        pairs = zip(self.baseline_blocks, self.candidate_blocks, strict=True)
        return np.array([np.median(b) / np.median(c) for b, c in pairs])


def _paired_blocks(
    run_baseline: Callable[[], Any], run_candidate: Callable[[], Any], block: int, start: int = 0
) -> _Blocks:
    """`PAIRS_PER_ROUND` pairs of timed blocks of ``block`` runs, the baseline first in every other pair
    (counted from ``start``, the pairs timed before)."""

    def timed(run: Callable[[], Any]) -> np.ndarray:
        times = np.empty(block, dtype=np.float64)
        for i in range(block):
            t0 = time.perf_counter_ns()
            run()
            times[i] = (time.perf_counter_ns() - t0) / 1e6
        return times

    cand: list[np.ndarray] = []
    base: list[np.ndarray] = []
    for i in range(PAIRS_PER_ROUND):
        if (start + i) % 2 == 0:
            base.append(timed(run_baseline))
            cand.append(timed(run_candidate))
        else:
            cand.append(timed(run_candidate))
            base.append(timed(run_baseline))
    return _Blocks(cand, base)


def _summary(times: np.ndarray, batch: int) -> dict[str, float]:
    p50, p90, p95, p99 = np.percentile(times, [50, 90, 95, 99])
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "mean_ms": float(times.mean()),
        "throughput_per_s": float(batch * 1000.0 / times.mean()),
    }


# -- runtimes -----------------------------------------------------------------------------------------
def check_provider(profile: str, provider: str, available: list[str]) -> None:
    """Refuse a provider this ONNX Runtime build does not have."""
    if provider not in available:
        import onnxruntime as ort

        raise DeviceUnavailableError(
            f"device profile {profile!r} needs ONNX Runtime's {provider}, which this machine's ONNX Runtime "
            f"{ort.__version__} does not provide (available here: {', '.join(available)}). squeezeflow does "
            f"not measure it on another provider instead. Measure the profile on the device (`remote: true` "
            f"and `squeezeflow agent --profile {profile}` there) or install an ONNX Runtime build with "
            f"{provider}."
        )


def token_id_bound(model_path: Path, input_name: str) -> int | None:
    """The number of valid token ids of an ONNX model whose integer input indexes a table: the smallest
    first dimension of the constant tables that a ``Gather`` looks the input up in (the word embedding,
    or a vocabulary-pruning remap table in front of it). None when no such lookup is found."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    tables = {t.name: list(t.dims) for t in model.graph.initializer}
    ids = {input_name}  # the input, and the same ids reshaped on the way to the lookup
    sizes: list[int] = []
    for n in model.graph.node:  # nodes are in topological order
        if n.op_type in _ID_RESHAPES and n.input and n.input[0] in ids:
            ids.update(n.output)
        elif (
            n.op_type in ("Gather", "GatherND")
            and len(n.input) > 1
            and n.input[1] in ids
            and tables.get(n.input[0])
        ):
            sizes.append(int(tables[n.input[0]][0]))
    return min(sizes) if sizes else None


_ID_RESHAPES = frozenset({"Reshape", "Flatten", "Unsqueeze", "Squeeze", "Identity", "Cast"})


def token_ids(shape: tuple[int, ...], vocab: int | None, dtype: Any, seed: int = 0) -> np.ndarray:
    """Realistic token-id rows, seeded: each row a random length between a quarter of the sequence and all
    of it, ids drawn from ``[1, vocab)`` (id 0, the usual pad id, after the row's end). Without a known
    vocabulary every token is id 1, valid in any vocabulary of two or more tokens."""
    rng = np.random.default_rng(seed)
    width = shape[-1] if len(shape) > 1 else 1
    if vocab is None or vocab < 3:
        ids = np.ones(shape, dtype=dtype)
    else:
        ids = rng.integers(1, vocab, size=shape, dtype=np.int64).astype(dtype)
    lengths = rng.integers(max(1, width // 4), width + 1, size=shape[:-1] if len(shape) > 1 else shape)
    if len(shape) > 1:
        ids[np.arange(width) >= lengths[..., None]] = 0
    return ids


TOKEN_POOL_SIZE = 32


def token_id_pool(
    shape: tuple[int, ...], vocab: int | None, dtype: Any, size: int = TOKEN_POOL_SIZE
) -> list[np.ndarray]:
    """``size`` distinct `token_ids` batches (seeds 0, 1, ...), so that timing cycles through a spread of
    real lengths instead of one: a model whose cost follows the unpadded length (one that trims padding
    at run time) is measured over the length distribution, not at one arbitrary length. The first batch
    is ``token_ids(shape, vocab, dtype)``."""
    return [token_ids(shape, vocab, dtype, seed=i) for i in range(size)]


def _onnx_runner(req: dict[str, Any], profile: str) -> tuple[Callable[[int], Callable[[], Any]], Any]:
    """The ONNX Runtime session on the requested provider, and a factory of one-batch runs."""
    import onnxruntime as ort

    from squeezeflow.runtime import session

    provider = str(req.get("execution_provider") or "CPUExecutionProvider")
    check_provider(profile, provider, ort.get_available_providers())
    sess = session(
        Path(req["model"]),
        intra_op_threads=int(req["intra_op_threads"]),
        inter_op_threads=int(req["inter_op_threads"]),
        provider=provider,
    )
    used = sess.get_providers()
    if not used or used[0] != provider:  # e.g. CUDA present but its libraries failed to load
        raise DeviceUnavailableError(
            f"device profile {profile!r} needs ONNX Runtime's {provider}, but the session ONNX Runtime "
            f"created runs on {used} (the provider failed to initialise on this machine); squeezeflow does "
            "not measure it on another provider instead"
        )
    first = sess.get_inputs()[0]
    shape = list(req["input_shape"])
    integer = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}.get(first.type)

    vocab = token_id_bound(Path(req["model"]), first.name) if integer is not None else None

    def runner(batch: int) -> Callable[[], Any]:
        # Integer inputs are token ids: a pre-built pool of batches of different lengths (see
        # `token_id_pool`) that the runs cycle through, warm-up included; the loop only takes the next
        # feed. Floats are one array, uniform in [0, 1).
        if integer is None:
            feed = {first.name: np.random.default_rng(0).random((batch, *shape), dtype=np.float32)}
            return lambda: sess.run(None, feed)
        feeds = itertools.cycle([{first.name: x} for x in token_id_pool((batch, *shape), vocab, integer)])
        return lambda: sess.run(None, next(feeds))

    return runner, sess


def _torch_runner(req: dict[str, Any]) -> tuple[Callable[[int], Callable[[], Any]], Any]:
    """The baseline's original PyTorch module in eager mode, and a factory of one-batch runs."""
    import torch

    from squeezeflow.models.sources import load_torch_model
    from squeezeflow.spec.job import ModelSource

    model = load_torch_model(ModelSource.model_validate(req["torch_source"]), Path(req["model"]))
    if isinstance(model, torch.export.ExportedProgram):
        model = model.module()
    shape = list(req["input_shape"])
    vocab = _token_vocab(model, shape)

    def runner(batch: int) -> Callable[[], Any]:
        if vocab is None:
            x = torch.from_numpy(np.random.default_rng(0).random((batch, *shape), dtype=np.float32))

            def run() -> Any:
                with torch.inference_mode():
                    return model(x)

            return run
        # A text model: token-id batches of spread lengths, as the ONNX runner feeds (`token_id_pool`).
        pool = itertools.cycle(
            [torch.from_numpy(ids) for ids in token_id_pool((batch, *shape), vocab, np.int64)]
        )

        def run_ids() -> Any:
            with torch.inference_mode():
                return model(next(pool))

        return run_ids

    return runner, model


def _token_vocab(model: Any, shape: list[int]) -> int | None:
    """The vocabulary size when ``model`` takes token ids instead of floats, else None.

    A PyTorch module does not declare its input type the way an ONNX graph does: a float sample is tried
    first, and a model that refuses it but has an ``nn.Embedding`` takes ids below its largest table."""
    import torch

    embeddings = [m.num_embeddings for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    if not embeddings:
        return None
    try:
        with torch.inference_mode():
            model(torch.zeros((1, *shape), dtype=torch.float32))
        return None
    except (RuntimeError, TypeError, IndexError):
        return max(embeddings)


def torch_cost(module: Any, input_shape: list[int]) -> dict[str, int | None]:
    """Parameters, weight bytes and Conv/Linear MACs of a PyTorch module for one sample, with forward
    hooks (the same operations `squeezeflow.onnx_cost` counts in the exported graph). MACs are None for
    modules hooks cannot see into (TorchScript, exported programs)."""
    import torch

    params = sum(int(p.numel()) for p in module.parameters())
    weight_bytes = sum(int(t.numel() * t.element_size()) for t in [*module.parameters(), *module.buffers()])
    macs = 0

    def hook(m: Any, _inputs: Any, out: Any) -> None:
        nonlocal macs
        per_output = (
            m.in_features
            if isinstance(m, torch.nn.Linear)
            else (m.in_channels // m.groups) * int(np.prod(m.kernel_size))
        )
        macs += int(out.numel()) * int(per_output)

    if isinstance(module, torch.jit.ScriptModule):
        return {"params": params, "weight_bytes": weight_bytes, "macs": None}
    layers = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, layers)]
    if not handles:  # e.g. an exported program's graph module: its layers are graph ops, not modules
        return {"params": params, "weight_bytes": weight_bytes, "macs": None}
    # a text model counts one full-length row of token ids (id 1: valid in any vocabulary of two or more)
    example = (
        torch.zeros(1, *input_shape)
        if _token_vocab(module, input_shape) is None
        else torch.ones((1, *input_shape), dtype=torch.int64)
    )
    try:
        with torch.inference_mode():
            module(example)
    finally:
        for h in handles:
            h.remove()
    return {"params": params, "weight_bytes": weight_bytes, "macs": macs}


# -- the measurement ----------------------------------------------------------------------------------
def measure(req: dict[str, Any]) -> dict[str, Any]:
    """Measure one model as ``req`` says (see the module docstring) and return the numbers."""
    threads = int(req["intra_op_threads"])
    profile = str(req.get("profile") or "(unnamed)")
    runtime = str(req.get("runtime") or "onnxruntime")
    if req.get("pin_cpus", True) and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= threads:
            os.sched_setaffinity(0, cpus[:threads])
    batch = int(req["batch_size"])
    n, warmup = int(req["iterations"]), int(req["warmup"])
    target_cv, max_rounds = float(req.get("target_cv", 0.05)), int(req.get("max_rounds", 5))
    confidence = float(req.get("speedup_confidence", SPEEDUP_CONFIDENCE))

    # The libraries are imported before the baseline RSS is read: the increase is the model's
    # (weights, session, arenas, buffers), not the interpreter's or the runtime's.
    import squeezeflow.models.sources  # noqa: F401

    if runtime == "pytorch_eager":
        import torch

        torch.set_num_threads(threads)
        # Raises once set in this process (only when called in-process, as tests do).
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(int(req["inter_op_threads"]))
        rss_before = rss_mb()
        make_run, model = _torch_runner(req)
    else:
        import onnxruntime  # noqa: F401

        rss_before = rss_mb()
        make_run, model = _onnx_runner(req, profile)

    run = make_run(batch)
    paired_with = req.get("paired_with") if runtime == "onnxruntime" else None
    paired: PairedTimes | None = None
    if paired_with:
        # Every input of the token pool is seen before the peak is read, and the peak is the
        # candidate's alone: read before the baseline is loaded.
        for _ in range(max(warmup, TOKEN_POOL_SIZE)):
            run()
        peak = peak_rss_mb()
        make_baseline, baseline_session = _onnx_runner({**req, "model": str(paired_with)}, profile)
        run_baseline = make_baseline(batch)
        for _ in range(warmup):
            run_baseline()
        screen = req.get("screen_slower_than")
        paired = paired_rounds(
            run_baseline,
            run,
            n,
            2 * target_cv,
            max_rounds,
            confidence,
            screen_slower_than=None if screen is None else float(screen),
        )
        times, rounds, cv = paired.candidate, paired.rounds, paired.cv
        del run_baseline, make_baseline, baseline_session
    else:
        for _ in range(warmup):
            run()
        times, rounds, cv = timed_rounds(run, n, target_cv, max_rounds)
        peak = peak_rss_mb()  # before other batch sizes, which may need more memory than `batch_size`
    result: dict[str, Any] = {
        **_summary(times, batch),
        "iterations": len(times),
        "rounds": rounds,
        "cv_p50": cv,
        "runtime": runtime,
        "execution_provider": str(req.get("execution_provider") or "CPUExecutionProvider"),
        "input_shape": list(req["input_shape"]),
        "peak_rss_mb": peak,
        "peak_rss_increase_mb": None if rss_before is None else max(0.0, peak - rss_before),
    }
    per_batch = [
        {
            "batch_size": batch,
            "p50_ms": result["p50_ms"],
            "p95_ms": result["p95_ms"],
            "throughput_per_s": result["throughput_per_s"],
            "cv_p50": cv,
            "rounds": rounds,
        }
    ]
    for extra in [int(b) for b in req.get("extra_batch_sizes", [])]:
        run = make_run(extra)
        for _ in range(warmup):
            run()
        t, r, c = timed_rounds(run, n, target_cv, max_rounds)
        s = _summary(t, extra)
        per_batch.append(
            {
                "batch_size": extra,
                "p50_ms": s["p50_ms"],
                "p95_ms": s["p95_ms"],
                "throughput_per_s": s["throughput_per_s"],
                "cv_p50": c,
                "rounds": r,
            }
        )
    result["per_batch"] = per_batch
    if paired is not None:
        result.update(
            {
                "speedup": paired.speedup,
                "speedup_low": paired.low if np.isfinite(paired.low) else None,
                "speedup_high": paired.high if np.isfinite(paired.high) else None,
                "speedup_confidence": confidence,
                "speedup_pairs": len(paired.ratios),
                "paired_baseline_p50_ms": float(np.percentile(paired.baseline, 50)),
            }
        )
    result.update(_cost(req, runtime, model, batch))
    return result


def _cost(req: dict[str, Any], runtime: str, model: Any, batch: int) -> dict[str, Any]:
    """Parameters, MACs and the energy estimate (after the timing, so counting never adds to the
    measured peak memory)."""
    from squeezeflow.devices.energy import estimate_energy

    shape = list(req["input_shape"])
    if runtime == "pytorch_eager":
        c = torch_cost(model, shape)
        params, macs, int8, wbytes = c["params"], c["macs"], 0, c["weight_bytes"]
    else:
        from squeezeflow.onnx_cost import onnx_cost

        oc = onnx_cost(req["model"], shape)
        params, macs, int8, wbytes = oc.params, oc.macs, oc.int8_macs, oc.weight_bytes
    energy = None
    if macs is not None and wbytes is not None:
        energy = estimate_energy(macs - int8, int8, wbytes, batch_size=batch).total_mj
    return {
        "params": params,
        "macs": macs,
        "int8_macs": int8,
        "weight_bytes": wbytes,
        "energy_mj_est": energy,
    }


def main() -> None:
    try:
        result = measure(json.loads(sys.argv[1]))
    except DeviceUnavailableError as err:
        print(json.dumps({"error": "device_unavailable", "message": str(err)}))
        sys.exit(EXIT_DEVICE_UNAVAILABLE)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
