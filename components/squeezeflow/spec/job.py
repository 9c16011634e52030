"""The job spec itself (`JobSpec`): the model, the data, the task and its metric, and the sections that
live in their own modules (tolerance, devices, search, registry target)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from squeezeflow.errors import SpecError
from squeezeflow.spec.base import NAME_PATTERN, StrictModel
from squeezeflow.spec.devices import DeviceEntry, DeviceProfile
from squeezeflow.spec.gate import Tolerance
from squeezeflow.spec.registry import PRESENTATION_FIELDS, RegistryTarget
from squeezeflow.spec.search import SearchSpec
from squeezeflow.spec.training import TrainingSpec

API_VERSION = "squeezeflow/v1"
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ModelSource(StrictModel):
    """Where the trained baseline comes from."""

    format: Literal["onnx", "torchscript", "exported_program", "state_dict", "huggingface"] = Field(
        description="onnx: an .onnx file; torchscript: torch.jit.save archive; exported_program: "
        "torch.export.save archive (.pt2); state_dict: weights saved with torch.save(model.state_dict()), "
        "loaded with weights_only=True, plus `factory` that builds the module; huggingface: a Hugging Face "
        "transformers checkpoint directory (what save_pretrained writes: config.json, *.safetensors, and "
        "for a text model its tokenizer files), needs `pip install 'squeezeflow[hf]'`. Supported heads: "
        "*ForSequenceClassification (int64 token ids; the attention mask is derived from the pad id) and "
        "*ForImageClassification (float32 pixel values). Loaded offline (HF_HUB_OFFLINE=1, never the "
        "hub); refused: a config needing remote code (auto_map), weights only as pytorch_model.bin "
        "(a pickle: convert to safetensors), a text model without its tokenizer, any other head."
    )
    uri: str = Field(
        description="Local path (relative to the spec file) or s3://bucket/key; for huggingface a "
        "directory or an s3://bucket/prefix/ holding the checkpoint's files."
    )
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

    @property
    def is_module(self) -> bool:
        """Whether the model loads as an ``nn.Module`` whose layers the passes can change (prune,
        fine-tune, distil): a ``state_dict`` with its factory, or a Hugging Face checkpoint. TorchScript
        and ExportedProgram models load as torch graphs the passes cannot restructure."""
        return self.format in ("state_dict", "huggingface")


class DataSource(StrictModel):
    """Where the dataset lives: a directory or s3:// prefix in the squeezeflow.npz/v1 format."""

    uri: str = Field(description="Directory (relative to the spec file) or s3://bucket/prefix/.")
    format: Literal["npz"] = "npz"


class TaskSpec(StrictModel):
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


class JobSpec(StrictModel):
    """A compression job."""

    api_version: Literal["squeezeflow/v1"] = Field(default="squeezeflow/v1", alias="apiVersion")
    name: str = Field(pattern=NAME_PATTERN, description="Job name; also the MLflow experiment name.")
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
    training: TrainingSpec = Field(
        default_factory=TrainingSpec,
        description="Where the passes' recovery training runs (device, precision, determinism).",
    )
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
        history it keeps), so that changing them neither reruns a job nor changes its key. The training
        section is left out while it is the default (CPU), so specs written before it keep their key."""
        left_out: dict[str, Any] = {"registry": set(PRESENTATION_FIELDS)}
        if self.training == TrainingSpec():
            left_out["training"] = True
        kept = self.model_dump(mode="json", by_alias=True, exclude=left_out)
        return json.dumps(kept, sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()
