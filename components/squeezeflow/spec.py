"""The job spec: the one contract every front door (CLI, Airflow, Kubeflow) validates at the edge.

A spec is YAML (or JSON) that names the model, the data, the metric and tolerance, the target
device profiles, the search budget and the registry target. ``load_spec`` validates it once and
fails with messages that name the field and what is allowed. ``spec_json_schema`` exports the
JSON Schema for UIs and platform templates.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from squeezeflow.errors import SpecError
from squeezeflow.spec_document import read_spec_file
from squeezeflow.tracking.registry_tags import (
    DEFAULT_HISTORY_LIMIT,
    MAX_ALIAS_LENGTH,
    MAX_HISTORY_LIMIT,
    MAX_MODEL_NAME_LENGTH,
    MAX_REGISTERED_MODEL_DESCRIPTION_LENGTH,
)

API_VERSION = "squeezeflow/v1"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class _Strict(BaseModel):
    # allow_inf_nan: no budget, tolerance or threshold is meaningful at infinity or NaN (`.inf` is valid YAML)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSource(_Strict):
    """Where the trained baseline comes from."""

    format: Literal["onnx", "torchscript", "exported_program", "state_dict"] = Field(
        description="onnx: an .onnx file; torchscript: torch.jit.save archive; exported_program: "
        "torch.export.save archive (.pt2); state_dict: weights saved with torch.save(model.state_dict()), "
        "loaded with weights_only=True, plus `factory` that builds the module."
    )
    uri: str = Field(description="Local path (relative to the spec file) or s3://bucket/key.")
    factory: str | None = Field(
        default=None, description="`module:callable` returning the nn.Module (state_dict format only)."
    )
    factory_kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for factory.")

    @field_validator("factory")
    @classmethod
    def _factory_shape(cls, v: str | None) -> str | None:
        if v is not None and not _FACTORY.match(v):
            raise ValueError(f"must look like 'package.module:callable', got {v!r}")
        return v

    @model_validator(mode="after")
    def _factory_needed(self) -> ModelSource:
        if self.format == "state_dict" and not self.factory:
            raise ValueError("format 'state_dict' needs `factory: module:callable` that builds the model")
        if self.format != "state_dict" and self.factory:
            raise ValueError(f"`factory` is only used with format 'state_dict', not {self.format!r}")
        return self


class DataSource(_Strict):
    """Where the dataset lives: a directory or s3:// prefix in the squeezeflow.npz/v1 format."""

    uri: str = Field(description="Directory (relative to the spec file) or s3://bucket/prefix/.")
    format: Literal["npz"] = "npz"


class TaskSpec(_Strict):
    kind: Literal["classification"] = "classification"
    metric: str = Field(
        default="top1_accuracy",
        description="Primary metric, higher is better: top1_accuracy, top5_accuracy, macro_f1, or your own "
        "as 'package.module:callable' taking (labels, logits) and returning a float.",
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        from squeezeflow.metrics import resolve_metric

        try:
            resolve_metric(v)
        except SpecError as err:
            raise ValueError(str(err)) from None
        return v


Perturbation = Literal["gaussian_noise", "blur", "brightness", "token_dropout"]


class RobustnessCheck(_Strict):
    """Secondary guard: the candidate must keep the primary metric on perturbed held-out inputs too,
    so a model that is only accurate on clean data does not pass. Baseline and candidate see the
    same perturbed samples; the guard fails when, for any perturbation, the candidate's metric falls
    more than ``max_drop`` (absolute) below the baseline's on that perturbation."""

    perturbations: list[Perturbation] | None = Field(
        default=None,
        min_length=1,
        description="Omitted: gaussian_noise, blur and brightness for float (image) inputs; token_dropout "
        "for integer (token id) inputs.",
    )
    severity: float = Field(
        default=0.1,
        gt=0.0,
        le=1.0,
        description="Strength: noise std and brightness shift as a fraction of the input range, blur sigma "
        "in pixels x 10, the fraction of tokens dropped.",
    )
    max_drop: float = Field(default=0.02, ge=0.0, lt=1.0)
    samples: int = Field(
        default=1000, ge=50, le=1_000_000, description="Held-out samples perturbed (the first N, seeded)."
    )
    pad_token_id: int = Field(default=0, ge=0, description="What token_dropout writes in place of a token.")


class Tolerance(_Strict):
    """How much of the primary metric a candidate may lose against the baseline."""

    mode: Literal["absolute", "relative"] = Field(
        default="absolute",
        description="absolute: max_drop in metric units (0.01 = one point of accuracy); "
        "relative: max_drop as a fraction of the baseline metric.",
    )
    max_drop: float = Field(default=0.01, ge=0.0, lt=1.0)
    method: Literal["bootstrap", "point"] = Field(
        default="bootstrap",
        description="bootstrap: gate on the upper confidence bound of the drop (paired bootstrap over the "
        "held-out predictions); point: gate on the measured drop alone.",
    )
    confidence: float = Field(
        default=0.95, ge=0.5, le=0.999, description="One-sided confidence of the bound."
    )
    bootstrap_samples: int = Field(default=2000, ge=200, le=100_000)
    max_class_recall_drop: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Secondary guard: fail a candidate when the recall of any single class on the held-out "
        "split drops by more than this (absolute), even if the primary metric holds. None: the worst "
        "class's drop is reported, not enforced.",
    )
    min_agreement: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Secondary guard: fail a candidate whose top-1 predictions agree with the baseline's on "
        "less than this fraction of the held-out samples (a model can keep its accuracy while changing "
        "which samples it gets right). None: agreement is reported, not enforced.",
    )
    robustness: RobustnessCheck | None = Field(
        default=None, description="Secondary guard on perturbed held-out inputs. None: not checked."
    )
    min_device_agreement: float = Field(
        default=0.99,
        ge=0.0,
        le=1.0,
        description="For profiles with `evaluate_on_device`: the fraction of held-out samples on which the "
        "device's top-1 answers must equal this machine's for the candidate to pass.",
    )

    def allowed_drop(self, baseline_metric: float) -> float:
        return self.max_drop if self.mode == "absolute" else self.max_drop * baseline_metric


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


class DeviceBudgets(_Strict):
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


class DeviceProfile(_Strict):
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
    name: str = Field(pattern=_NAME, description="Unique within the job; required unless `profile` is given.")
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


class PassStep(_Strict):
    name: str = Field(description="Registered pass name, e.g. ort_static_int8.")
    params: dict[str, Any] = Field(default_factory=dict)


class Recipe(_Strict):
    """An ordered list of passes: one candidate. Serialisable, so one orchestrator task can run it."""

    name: str | None = Field(default=None, pattern=_NAME)
    steps: list[PassStep] = Field(min_length=1)

    @model_validator(mode="after")
    def _passes_exist(self) -> Recipe:
        from squeezeflow.passes import validate_steps

        validate_steps(self.steps)
        return self

    @property
    def label(self) -> str:
        return self.name or "+".join(s.name for s in self.steps)

    def key(self) -> str:
        """Content hash of the recipe (name excluded): same passes and params, same key."""
        blob = json.dumps([s.model_dump(mode="json") for s in self.steps], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


Importance = Literal["magnitude", "taylor", "lamp"]
QuantizeChoice = Literal["none", "int8", "int8_accuracy_aware"]


def _default_importance() -> list[Importance]:
    return ["magnitude", "taylor"]


def _default_quantize() -> list[QuantizeChoice]:
    return ["none", "int8"]


class SearchSpace(_Strict):
    """What the multi-objective search may vary for PyTorch models (pruning, distillation, int8)."""

    prune_ratio: tuple[float, float] = Field(
        default=(0.3, 0.9), description="Range of channel pruning ratios."
    )
    importance: list[Importance] = Field(default_factory=_default_importance, min_length=1)
    distill: list[bool] = Field(
        default_factory=lambda: [False, True], description="Fine-tune with/without KD."
    )
    quantize: list[QuantizeChoice] = Field(
        default_factory=_default_quantize, min_length=1, description="What follows pruning and fine-tuning."
    )
    finetune_epochs: int = Field(
        default=6, ge=1, le=500, description="Recovery epochs of a candidate pruned by 50% or less."
    )
    max_recovery_scale: float = Field(
        default=3.0,
        ge=1.0,
        le=20.0,
        description="Stronger pruning gets longer recovery at the same training cost: a candidate pruned "
        "by ratio r fine-tunes for finetune_epochs x ((1 - 0.5) / (1 - r))^2 epochs (its MACs shrink by "
        "about that factor), capped at this multiple. 1 gives every candidate finetune_epochs.",
    )
    finetune_lr: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Peak recovery learning rate; default 3e-3 for float inputs (CNNs), 1e-4 for token-id "
        "inputs (pretrained transformers, which a CNN's rate would wreck).",
    )
    lowrank: bool = Field(default=False, description="Also try low-rank factorisation of large layers.")

    @field_validator("prune_ratio")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0.0 <= lo <= hi <= 0.95:
            raise ValueError(f"need 0 <= low <= high <= 0.95, got {list(v)}")
        return v


class SearchSpec(_Strict):
    recipes: list[Recipe] | None = Field(
        default=None,
        description="Explicit recipes to try (in order); omitted: cheap int8 recipes first, then a "
        "multi-objective search over `space` when the model is a PyTorch module.",
    )
    space: SearchSpace = Field(default_factory=SearchSpace)
    max_trials: int = Field(default=8, ge=1, le=10_000, description="Candidates built at most.")
    rounds: int = Field(
        default=6,
        ge=0,
        le=200,
        description="Rounds of the adaptive search after round 0 (the cheap int8 candidates, or the "
        "explicit recipes). Each round asks the study for `parallel_trials` recipes and builds them side by "
        "side (Airflow: mapped tasks; Kubeflow: a ParallelFor; the CLI: one after another). Airflow DAGs "
        "and Kubeflow pipelines are unrolled to this many rounds when they are built.",
    )
    parallel_trials: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Recipes asked per search round, built in parallel by the orchestrators.",
    )
    max_seconds: float = Field(
        default=1800.0, gt=0, le=30 * 86400, description="Wall-clock budget of the search (at most 30 days)."
    )
    patience: int = Field(
        default=4, ge=1, le=1000, description="Stop when the Pareto front is unchanged this long."
    )
    skip_slower_than: float | None = Field(
        default=1.5,
        gt=1.0,
        le=1000,
        description="A built candidate measured this many times slower than the baseline on a local "
        "target profile can never be promoted and is not sent to the gate (its row keeps the "
        "measurement and says why); null sends every candidate to the gate.",
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=2**32 - 1,
        description="Seeds the search and training (NumPy's range: 0 to 2**32-1).",
    )


# RegistryTarget fields that change how the registry shows and keeps a result, not the result.
_PRESENTATION_FIELDS = ("description", "history_limit")


class RegistryTarget(_Strict):
    # Both limits are what the MLflow registry accepts; the alias's also leaves room for the tag keys
    # squeezeflow builds from it (squeezeflow.tracking.registry_tags).
    model_name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=MAX_MODEL_NAME_LENGTH,
        description="Registered model name in the MLflow registry.",
    )
    alias: str = Field(
        default="champion",
        pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$",
        max_length=MAX_ALIAS_LENGTH,
        description="The registry alias a promotion moves (letters, digits, _ and -).",
    )
    description: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_REGISTERED_MODEL_DESCRIPTION_LENGTH,
        description="The registered model's description in the MLflow registry (Markdown); unset, "
        "squeezeflow writes one from the job (what the model is, the job, the metric and the tolerance). "
        "Either is written only while the model has no description or still has the one squeezeflow "
        "wrote last: a description a person wrote in the registry is never overwritten.",
    )
    history_limit: int = Field(
        default=DEFAULT_HISTORY_LIMIT,
        ge=1,
        le=MAX_HISTORY_LIMIT,
        description="How many moves of the alias the registry keeps in its history (one registered-model "
        "tag each, the newest; older ones are deleted after each move); `squeezeflow rollback` goes back "
        "at most this many moves, one per command.",
    )

    @field_validator("alias")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v.lower() == "latest" or re.fullmatch(r"[vV]\d+", v):
            raise ValueError(f"alias {v!r} is reserved by MLflow (latest, v<number>)")
        return v


class JobSpec(_Strict):
    """A compression job."""

    api_version: Literal["squeezeflow/v1"] = Field(default="squeezeflow/v1", alias="apiVersion")
    name: str = Field(pattern=_NAME, description="Job name; also the MLflow experiment name.")
    model: ModelSource
    data: DataSource
    task: TaskSpec = Field(default_factory=TaskSpec)
    tolerance: Tolerance = Field(default_factory=Tolerance)
    devices: list[DeviceEntry] = Field(
        default_factory=lambda: [DeviceProfile(name="local-cpu")],
        min_length=1,
        description="Device profiles: each a mapping, or the name of a shipped profile.",
    )
    target_device: str | None = Field(
        default=None,
        description="Profile the objective is measured on (default: the first); not a pytorch_eager one.",
    )
    objective: Literal["latency", "size"] = Field(
        default="latency", description="What the best passing candidate minimises on the target device."
    )
    search: SearchSpec = Field(default_factory=SearchSpec)
    registry: RegistryTarget

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _devices_consistent(self) -> JobSpec:
        names = [d.name for d in self.devices]
        if len(set(names)) != len(names):
            raise ValueError(f"device profile names must be unique, got {names}")
        if self.target_device is not None and self.target_device not in names:
            raise ValueError(f"target_device {self.target_device!r} is not one of the devices {names}")
        if self.target.runtime == "pytorch_eager":
            chosen = "target_device" if self.target_device else "target_device (default: the first device)"
            raise ValueError(
                f"{chosen} is {self.target.name!r}, a pytorch_eager reference profile: candidates ship as "
                "ONNX and cannot be measured there; name an onnxruntime profile as target_device"
            )
        for i, d in enumerate(self.devices):
            if d.runtime == "pytorch_eager" and self.model.format == "onnx":
                raise ValueError(
                    f"devices.{i} ({d.name!r}) has runtime 'pytorch_eager', which measures the original "
                    "PyTorch module, but model.format is 'onnx': there is none; use runtime 'onnxruntime'"
                )
        return self

    @property
    def target(self) -> DeviceProfile:
        name = self.target_device or self.devices[0].name
        return next(d for d in self.devices if d.name == name)

    def canonical_json(self) -> str:
        """The spec's fields that decide what the job computes, as canonical JSON. Left out: how the
        registry presents and keeps the result (the registered model's description, how much alias
        history it keeps), so that changing them neither reruns a job nor changes its key."""
        kept = self.model_dump(mode="json", by_alias=True, exclude={"registry": set(_PRESENTATION_FIELDS)})
        return json.dumps(kept, sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid job spec {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; `squeezeflow spec schema` lists the allowed fields)"
        got = e.get("input")
        shown = (
            "" if e["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        )
        lines.append(f"  - {loc}: {msg}{shown}")
    return "\n".join(lines)


def _resolve_local(uri: str, base: Path | None) -> str:
    if uri.startswith("s3://") or base is None:
        return uri
    p = Path(uri).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def parse_spec(data: Any, source: str = "<spec>", base_dir: Path | None = None) -> JobSpec:
    """Validate an already-parsed spec document. Relative local paths resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise SpecError(
            f"invalid job spec {source}: the top level must be a mapping, got {type(data).__name__}"
        )
    doc = dict(data)
    for section in ("model", "data"):
        sec = doc.get(section)
        if isinstance(sec, dict) and isinstance(sec.get("uri"), str):
            doc[section] = {**sec, "uri": _resolve_local(sec["uri"], base_dir)}
    try:
        return JobSpec.model_validate(doc)
    except ValidationError as err:
        raise SpecError(_format_validation_error(err, source)) from None


def check_local_inputs(job: JobSpec, source: str = "<spec>") -> None:
    """Refuse a spec whose local model or data path does not exist (S3 URIs are checked when read), so a
    job creates nothing (no MLflow store, no work directory) before its inputs are known to exist."""
    missing = [
        f"{section}.uri {uri} does not exist"
        for section, uri in (("model", job.model.uri), ("data", job.data.uri))
        if not uri.startswith("s3://") and not Path(uri).exists()
    ]
    if missing:
        raise SpecError(f"invalid job spec {source}: " + "; ".join(missing))


def spec_folder(path: str | Path) -> Path:
    """The folder a spec file's relative paths resolve against: the folder it is found in, as named (a
    spec reached through a symbolic link resolves its paths beside the link, like a file copied there)."""
    return Path(path).absolute().parent


def load_spec(path: str | Path) -> JobSpec:
    """Load and validate a YAML/JSON job spec file."""
    p = Path(path)
    return parse_spec(read_spec_file(p), source=str(p), base_dir=spec_folder(p))


def spec_json_schema() -> dict[str, Any]:
    """JSON Schema of the job spec (for UIs, templates and editors)."""
    schema = JobSpec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "squeezeflow job spec"
    return schema
