"""Where recovery training runs: the job spec's ``training`` section resolved for this machine
(`resolve_training`), and what `squeezeflow.training.finetune` needs to train there: the model and the
teacher moved to the device and back (`on_device`), mixed precision (`training_precision`), and
deterministic algorithms on a GPU (`deterministic_algorithms`). torch is imported inside each function."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from squeezeflow.errors import DeviceUnavailableError

log = logging.getLogger(__name__)

Device = Literal["cpu", "cuda"]
Precision = Literal["fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class TrainingSetup:
    """Where training runs and at what precision, resolved for this machine (`resolve_training`)."""

    device: Device = "cpu"
    precision: Precision = "fp32"
    deterministic: bool = True


def cuda_available() -> bool:
    """Whether PyTorch sees a CUDA GPU here."""
    import torch

    return bool(torch.cuda.is_available())


def resolve_training(
    device: str = "cpu", precision: str = "auto", deterministic: bool = True
) -> TrainingSetup:
    """The job spec's ``training`` values (``auto`` included) resolved for this machine: ``auto`` is cuda
    when PyTorch sees a GPU, else cpu; precision is fp32 on the CPU, and ``auto`` / ``bf16`` are bf16 on
    a GPU that supports bfloat16, else fp32. ``cuda`` on a machine without a GPU raises
    `DeviceUnavailableError` (exit 2), naming what to change."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"training.device must be auto, cpu or cuda, got {device!r}")
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"training.precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if device == "cpu":
        return TrainingSetup("cpu", "fp32", deterministic)
    has_gpu = cuda_available()
    if device == "auto" and not has_gpu:
        return TrainingSetup("cpu", "fp32", deterministic)
    if not has_gpu:
        import torch

        why = (
            f"this PyTorch build has no CUDA support (torch {torch.__version__})"
            if torch.version.cuda is None
            else "PyTorch sees no CUDA GPU (no driver, no device, or CUDA_VISIBLE_DEVICES hides it)"
        )
        raise DeviceUnavailableError(
            f"training.device is 'cuda', but {why}: run the job on a machine with an NVIDIA GPU and a "
            "CUDA build of PyTorch, or set training.device to 'cpu' (or 'auto', which trains on a GPU "
            "only where there is one)"
        )
    import torch

    chosen: Precision = "fp32" if precision == "fp32" else "fp16" if precision == "fp16" else "bf16"
    if chosen == "bf16" and not torch.cuda.is_bf16_supported():
        log.warning("training.precision %s: this GPU has no bfloat16; training in fp32", precision)
        chosen = "fp32"
    return TrainingSetup("cuda", chosen, deterministic)


@contextlib.contextmanager
def deterministic_algorithms(setup: TrainingSetup) -> Iterator[None]:
    """While the block runs on a GPU with ``setup.deterministic``: deterministic algorithms (warn-only
    where an operation has none), cuDNN's autotuner off, and cuBLAS's fixed workspace. PyTorch's global
    flags are restored afterwards. Nothing changes on the CPU, whose training is deterministic for a
    given thread count already."""
    if setup.device != "cuda" or not setup.deterministic:
        yield
        return
    import torch

    # cuBLAS reads it when its handle is created: set before the first matmul of the process
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    was = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def training_precision(setup: TrainingSetup, quant_aware: bool) -> tuple[Callable[[], Any], Any | None]:
    """The context a training step's forward and loss run in (`autocast_for`), and fp16's gradient scaler
    (small gradients would underflow float16; None otherwise)."""
    autocast = autocast_for(setup, quant_aware)
    if setup.precision != "fp16" or autocast is contextlib.nullcontext:
        return autocast, None
    import torch

    return autocast, torch.amp.GradScaler("cuda")


def autocast_for(setup: TrainingSetup, quant_aware: bool) -> Callable[[], Any]:
    """A factory of the context a training step's forward and loss run in: torch.autocast at the setup's
    precision on a GPU; nothing on the CPU, at fp32, or under quantization-aware training (its simulated
    int8 scales and rounding need float32)."""
    if setup.device != "cuda" or setup.precision == "fp32" or quant_aware:
        return contextlib.nullcontext
    import torch

    dtype = torch.bfloat16 if setup.precision == "bf16" else torch.float16
    return lambda: torch.autocast("cuda", dtype=dtype)


def device_of(model: Any) -> Any:
    """The device ``model``'s parameters are on (the CPU for a model without any)."""
    import torch

    return next((p.device for p in model.parameters()), torch.device("cpu"))


@contextlib.contextmanager
def on_device(dev: str, model: Any, teacher: Any | None) -> Iterator[None]:
    """The model and the teacher on ``dev`` while the block runs, back on the CPU afterwards (the ONNX
    export and every pass after training work on the CPU), and the GPU's cached memory released."""
    if dev == "cpu":
        yield
        return
    import torch

    model.to(dev)
    if teacher is not None:
        teacher.to(dev)
    try:
        yield
    finally:
        model.to("cpu")
        if teacher is not None:
            teacher.to("cpu")
        torch.cuda.empty_cache()
