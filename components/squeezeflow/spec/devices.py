"""The target devices of the job spec: device profiles (how a model is run and measured there), their
budgets, and the library of profiles shipped with squeezeflow (``squeezeflow/profiles/*.yaml``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator

from squeezeflow.spec.base import NAME_PATTERN, StrictModel

ExecutionProvider = Literal[
    "CPUExecutionProvider",
    "CUDAExecutionProvider",
    "TensorrtExecutionProvider",
    "OpenVINOExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "QNNExecutionProvider",
    "XnnpackExecutionProvider",
    "NnapiExecutionProvider",
    "DnnlExecutionProvider",
    "ACLExecutionProvider",
    "ArmNNExecutionProvider",
    "CANNExecutionProvider",
    "VitisAIExecutionProvider",
    "RknpuExecutionProvider",
    "WebGpuExecutionProvider",
]
"""ONNX Runtime execution providers a profile may name (ONNX Runtime's own spelling). Whether one can be
measured is decided where the measurement runs, never by falling back to another provider."""

_BatchSize = Annotated[int, Field(ge=1, le=4096)]
_Dim = Annotated[int, Field(ge=1, le=1_000_000)]


class DeviceBudgets(StrictModel):
    """Limits a candidate must meet on a device profile to be promoted. They are checked against the
    candidate's measurement on that profile; the baseline's status is reported, never enforced."""

    max_p95_ms: float | None = Field(default=None, gt=0, description="p95 latency at `batch_size`, in ms.")
    max_size_mb: float | None = Field(default=None, gt=0, description="Model file size in MB (10^6 bytes).")
    max_peak_memory_mb: float | None = Field(
        default=None,
        gt=0,
        description="Peak memory the model adds to the benchmark process, in MB (10^6 bytes): the process's "
        "peak resident set size minus its resident set size just before the model was loaded (so the "
        "Python interpreter and the runtime's own libraries do not count).",
    )

    def is_empty(self) -> bool:
        return self.max_p95_ms is None and self.max_size_mb is None and self.max_peak_memory_mb is None


def _library_dir() -> Any:
    from importlib.resources import files

    return files("squeezeflow") / "profiles"


def _profile_documents() -> dict[str, dict[str, Any]]:
    """The shipped device profiles as raw documents, by name (read once per process)."""
    global _PROFILE_DOCS
    if _PROFILE_DOCS is None:
        docs: dict[str, dict[str, Any]] = {}
        for entry in sorted(_library_dir().iterdir(), key=lambda e: e.name):
            if entry.name.endswith((".yaml", ".yml")):
                doc = yaml.safe_load(entry.read_text(encoding="utf-8"))
                stem = entry.name.rsplit(".", 1)[0]
                if not isinstance(doc, dict) or doc.get("name") != stem:
                    raise RuntimeError(f"device profile library file {entry.name}: `name` must be {stem!r}")
                docs[stem] = doc
        _PROFILE_DOCS = docs
    return _PROFILE_DOCS


_PROFILE_DOCS: dict[str, dict[str, Any]] | None = None


def profile_library() -> dict[str, DeviceProfile]:
    """The device profiles shipped with squeezeflow (``squeezeflow/profiles/*.yaml``), by name. A spec
    uses one as ``devices: [x86-edge-2t]`` or, with fields changed, ``{profile: x86-edge-2t, ...}``."""
    return {name: DeviceProfile.model_validate(doc) for name, doc in _profile_documents().items()}


def _device_entry(value: Any) -> Any:
    """A bare string in ``devices`` names a library profile."""
    return {"profile": value} if isinstance(value, str) else value


class DeviceProfile(StrictModel):
    """A target device: how a model is run and measured there, and the budgets a candidate must meet.

    ``profile: NAME`` starts from the shipped library profile of that name; every other field given
    overrides the library's value (``budgets`` field by field), and ``name`` defaults to the library's.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        # `name` may come from the library profile, so the schema must not demand it.
        json_schema_extra=lambda schema: schema.__setitem__(
            "required", [r for r in schema.get("required", []) if r != "name"]
        ),
    )

    profile: str | None = Field(
        default=None,
        description="Start from this shipped device profile (`squeezeflow profiles` lists them); the other "
        "fields given here override it.",
    )
    name: str = Field(
        pattern=NAME_PATTERN, description="Unique within the job; required unless `profile` is given."
    )
    runtime: Literal["onnxruntime", "pytorch_eager"] = Field(
        default="onnxruntime",
        description="onnxruntime: the shipped ONNX models, on `execution_provider`. pytorch_eager: a "
        "reference that measures the baseline's original PyTorch module on the CPU; candidates are not "
        "measured on it, and it cannot be the target device.",
    )
    execution_provider: ExecutionProvider = Field(
        default="CPUExecutionProvider",
        description="ONNX Runtime execution provider. A profile whose provider this machine's ONNX Runtime "
        "lacks fails when measured (never falls back to the CPU): mark it `remote: true` and run its agent "
        "on the device.",
    )
    intra_op_threads: int = Field(default=2, ge=1, le=256)
    inter_op_threads: int = Field(default=1, ge=1, le=64)
    batch_size: int = Field(default=1, ge=1, le=4096, description="The batch the objective and budgets use.")
    extra_batch_sizes: list[_BatchSize] = Field(
        default_factory=list,
        max_length=8,
        description="Also measured (p50 and throughput per batch size); they do not affect promotion.",
    )
    input_shape: list[_Dim] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description="Shape of one sample (no batch dimension) to measure with, instead of the dataset's.",
    )
    channel_multiple: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Channel counts this device's int8 kernels run best at: pruned widths are rounded to "
        "multiples of it (and of its double, searched) unless `search.space.round_to` says otherwise. "
        "ONNX Runtime's x86 int8 convolutions and matmuls (AVX2, AVX-512 VNNI) work in blocks of 8 and 16 "
        "channels; a width of 19 runs slower than one of 24. 1: no rounding.",
    )
    warmup: int = Field(default=20, ge=0, le=10_000)
    iterations: int = Field(default=300, ge=10, le=1_000_000)
    budgets: DeviceBudgets = Field(
        default_factory=DeviceBudgets, description="Limits a candidate must meet here to be promoted."
    )
    remote: bool = Field(
        default=False,
        description="Measured on the device itself by `squeezeflow agent --profile NAME`, which takes "
        "requests from the artifact store; the pipeline waits for the result (in Airflow, deferred: no "
        "worker slot held).",
    )
    remote_timeout_s: float = Field(
        default=3600.0, gt=0, le=7 * 86400, description="How long to wait for a remote device's result."
    )
    evaluate_on_device: bool = Field(
        default=False,
        description="Remote profiles only: the device agent also scores each candidate on the held-out split "
        "with this profile's runtime, and the gate compares the device's predictions with this machine's "
        "(`tolerance.min_device_agreement`), so a model that only holds in one runtime does not pass.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_library(cls, data: Any) -> Any:
        data = _device_entry(data)
        if not isinstance(data, dict) or not isinstance(data.get("profile"), str):
            return data
        base = _profile_documents().get(data["profile"])
        if base is None:  # reported on the `profile` field by its validator
            return {"name": data["profile"], **data}
        merged = {**base, **data}
        if isinstance(base.get("budgets"), dict) and isinstance(data.get("budgets"), dict):
            merged["budgets"] = {**base["budgets"], **data["budgets"]}
        return merged

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, v: str | None) -> str | None:
        if v is not None and v not in _profile_documents():
            raise ValueError(
                f"no shipped device profile named {v!r}; available: {sorted(_profile_documents())}"
            )
        return v

    @field_validator("extra_batch_sizes")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"batch sizes must be distinct, got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> DeviceProfile:
        if self.batch_size in self.extra_batch_sizes:
            raise ValueError(
                f"extra_batch_sizes {self.extra_batch_sizes} repeats batch_size {self.batch_size}, "
                "which is always measured"
            )
        if self.evaluate_on_device and not (self.remote and self.runtime == "onnxruntime"):
            raise ValueError(
                "evaluate_on_device needs a remote ONNX Runtime profile (`remote: true`): it is the device "
                "agent that scores the candidates there"
            )
        if self.runtime == "pytorch_eager" and self.execution_provider != "CPUExecutionProvider":
            raise ValueError(
                f"execution_provider {self.execution_provider!r} is an ONNX Runtime setting; "
                "runtime 'pytorch_eager' runs on the CPU (use CPUExecutionProvider)"
            )
        return self

    @property
    def batch_sizes(self) -> list[int]:
        """Every batch size measured, the objective's first."""
        return [self.batch_size, *self.extra_batch_sizes]

    def measurement_json(self) -> str:
        """What determines a measurement (not where it is taken, how long one waits for it, which library
        profile it started from, or the budgets it is judged by)."""
        return self.model_dump_json(
            exclude={"profile", "budgets", "remote", "remote_timeout_s", "evaluate_on_device"}
        )


DeviceEntry = Annotated[
    DeviceProfile, BeforeValidator(_device_entry, json_schema_input_type=str | DeviceProfile)
]
"""One item of ``devices``: a profile mapping, or the name of a shipped profile."""
