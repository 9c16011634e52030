"""The training block of the job spec: where and how the passes' recovery training runs (fine-tuning,
distillation, quantization-aware training). Everything after training (ONNX export, quantization, the
gate, benchmarks) runs on the CPU whatever this says."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from squeezeflow.spec.base import StrictModel

TrainingDevice = Literal["auto", "cpu", "cuda"]
TrainingPrecision = Literal["auto", "fp32", "bf16", "fp16"]


class TrainingSpec(StrictModel):
    """Where recovery training runs, at what precision, and how reproducibly."""

    device: TrainingDevice = Field(
        default="cpu",
        description="cpu (the default): train on the CPU. cuda: train on the first CUDA GPU; a machine "
        "without one refuses the job before any work (exit 2), and the Airflow pod mode and the Kubeflow "
        "pipelines request a GPU for the steps that build candidates. auto: cuda when PyTorch sees a GPU "
        "on the machine that builds the candidate, else cpu (no GPU is requested for it). The model, its "
        "batches, the teacher and its cached soft targets move to the device; the model comes back to the "
        "CPU before it is exported to ONNX.",
    )
    precision: TrainingPrecision = Field(
        default="auto",
        description="Mixed precision of training steps on a GPU (torch.autocast): bf16 (on a GPU without "
        "bfloat16: fp32), fp16 (with a gradient scaler), fp32, or auto (bf16 where the GPU supports it, "
        "else fp32). On the CPU, and for quantization-aware training (whose simulated int8 rounding needs "
        "float32), training is always fp32. Validation is always fp32.",
    )
    deterministic: bool = Field(
        default=True,
        description="On a GPU: deterministic algorithms (torch.use_deterministic_algorithms, warn-only "
        "where an operation has none; cuDNN autotuning off), so the same seed trains the same weights "
        "on the same GPU and software. CPU training is deterministic for a given thread count already.",
    )
