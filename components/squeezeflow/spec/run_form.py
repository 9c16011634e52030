"""The run form: the job spec fields a person may change when starting a run, listed once.

Both front doors build their form from `FIELDS`: the Airflow DAG's trigger params
(`squeezeflow.airflow.factory.run_params`) and the Kubeflow pipeline's parameters
(`squeezeflow.kfp.pipelines`). Both turn what was filled in into spec overrides with `form_overrides`,
which `squeezeflow.tasks.resolve_spec` deep-merges into the job spec and validates, so a bad value is
reported against the spec field it sets.

Bounds and choices are read from the job spec's own JSON Schema (`squeezeflow.spec.job.JobSpec`), and a
form's defaults from a spec (`form_defaults`), so the form never disagrees with the spec it changes.

A value that is unset changes nothing: the spec's value (or the spec's default) stays. Unset is ``None``,
an empty string or list, and -1 in a numeric field: Kubeflow's run form (and its local runner) cannot
leave a parameter empty, so its numeric fields use -1 for "as in the spec" (every numeric field of the
spec is at least 0; Airflow's form rejects -1 by the field's bounds before a run starts).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from squeezeflow.spec.job import JobSpec
from squeezeflow.spec.load import parse_spec

JsonType = Literal["string", "number", "integer", "array"]

#: The schema keywords of a spec field that a form repeats (Airflow's trigger form checks them).
_CONSTRAINTS = ("enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern", "maxLength")


@dataclass(frozen=True)
class FormField:
    """One field of the run form."""

    name: str
    """The form's name for it (an Airflow param, a Kubeflow pipeline parameter)."""
    path: tuple[str, ...]
    """Where it lives in the job spec (``("tolerance", "max_drop")`` is ``tolerance.max_drop``)."""
    type: JsonType
    title: str
    description: str
    required: bool = False
    """A job needs it: without a spec to start from, the form must fill it in."""
    nullable: bool = False
    """The spec's own value may be null (no target device, no factory)."""

    @property
    def spec_field(self) -> str:
        return ".".join(self.path)

    @property
    def constraints(self) -> dict[str, Any]:
        """Bounds, choices and patterns of the spec field, as JSON Schema keywords."""
        return dict(_constraints()[self.path])

    def hint(self) -> str:
        """The constraints in words, for a form that cannot check them (Kubeflow's)."""
        c = {k: _number(v) for k, v in self.constraints.items()}
        parts = []
        if "enum" in c:
            parts.append("one of " + ", ".join(str(v) for v in c["enum"]))
        low = (f"≥ {c['minimum']}" if "minimum" in c else "") or (
            f"> {c['exclusiveMinimum']}" if "exclusiveMinimum" in c else ""
        )
        high = (f"≤ {c['maximum']}" if "maximum" in c else "") or (
            f"< {c['exclusiveMaximum']}" if "exclusiveMaximum" in c else ""
        )
        if low or high:
            parts.append(" and ".join(p for p in (low, high) if p))
        if "maxLength" in c:
            parts.append(f"at most {c['maxLength']} characters")
        return "; ".join(parts)


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


FIELDS: tuple[FormField, ...] = (
    FormField(
        "job_name",
        ("name",),
        "string",
        "Job name",
        "Names the job's MLflow experiment and its records in the artifact store.",
        required=True,
    ),
    FormField(
        "model_uri",
        ("model", "uri"),
        "string",
        "Model URI",
        "The trained baseline: s3://bucket/key, or a path the workers can read.",
        required=True,
    ),
    FormField(
        "model_format",
        ("model", "format"),
        "string",
        "Model format",
        "How the baseline is saved: an .onnx file, a TorchScript or torch.export archive, a state_dict "
        "(which needs the model factory), or huggingface (a save_pretrained directory or s3:// prefix).",
        required=True,
    ),
    FormField(
        "model_factory",
        ("model", "factory"),
        "string",
        "Model factory",
        "`package.module:callable` that builds the model a state_dict is loaded into (state_dict only).",
        nullable=True,
    ),
    FormField(
        "data_uri",
        ("data", "uri"),
        "string",
        "Data URI",
        "The evaluation dataset (squeezeflow.npz/v1): s3://bucket/prefix/, or a directory the workers can "
        "read.",
        required=True,
    ),
    FormField(
        "objective",
        ("objective",),
        "string",
        "Objective",
        "What the best candidate that passes the gate minimises on the target device.",
    ),
    FormField(
        "max_drop",
        ("tolerance", "max_drop"),
        "number",
        "Maximum accuracy drop",
        "How much of the metric a candidate may lose: absolute (0.01 = one point) or relative to the "
        "baseline, per the tolerance mode.",
    ),
    FormField(
        "tolerance_mode",
        ("tolerance", "mode"),
        "string",
        "Tolerance mode",
        "absolute: the maximum drop is in metric units; relative: a fraction of the baseline's metric.",
    ),
    FormField(
        "max_trials",
        ("search", "max_trials"),
        "integer",
        "Candidates at most",
        "How many candidates the search builds at most.",
    ),
    FormField(
        "max_seconds",
        ("search", "max_seconds"),
        "number",
        "Search time budget (seconds)",
        "Wall-clock budget of the search; no new round starts after it.",
    ),
    FormField(
        "rounds",
        ("search", "rounds"),
        "integer",
        "Search rounds",
        "Rounds of the adaptive search after the cheap candidates. A DAG or pipeline is unrolled to its "
        "spec's rounds when it is built: more than that runs no more rounds, fewer stops earlier.",
    ),
    FormField(
        "parallel_trials",
        ("search", "parallel_trials"),
        "integer",
        "Trials per round",
        "Candidates asked per search round, built in parallel.",
    ),
    FormField(
        "devices",
        ("devices",),
        "array",
        "Device profiles",
        "The device profiles to benchmark on, replacing the spec's: a list of profile objects or shipped "
        "profile names (`squeezeflow profiles`; `squeezeflow spec schema` lists a profile's fields).",
    ),
    FormField(
        "target_device",
        ("target_device",),
        "string",
        "Target device",
        "The profile the objective is measured on (one of the devices; empty: the first).",
        nullable=True,
    ),
    FormField(
        "model_name",
        ("registry", "model_name"),
        "string",
        "Registered model name",
        "The MLflow registered model a promotion creates a version of.",
        required=True,
    ),
    FormField(
        "alias",
        ("registry", "alias"),
        "string",
        "Registry alias",
        "The alias a promotion moves to the new version (a deployment follows it).",
    ),
)

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
_BY_NAME = {f.name: f for f in FIELDS}


def field(name: str) -> FormField:
    return _BY_NAME[name]


#: What a form that cannot leave a field empty (Kubeflow's) sends for "unset", per JSON type.
UNSET_NUMBER = -1


def unset_value(f: FormField) -> Any:
    """The value that leaves ``f`` as the spec has it, in a form whose fields cannot be empty."""
    return {"string": "", "array": [], "number": float(UNSET_NUMBER), "integer": UNSET_NUMBER}[f.type]


def _unset(value: Any, f: FormField | None = None) -> bool:
    if value is None or (isinstance(value, (str, list, tuple, dict)) and len(value) == 0):
        return True
    numeric = f is not None and f.type in ("number", "integer") and not isinstance(value, bool)
    return numeric and value == UNSET_NUMBER


def form_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """The spec overrides a filled-in run form makes (a nested mapping for
    `squeezeflow.tasks.resolve_spec`). Unset values (``None``, ``""``, ``[]``, -1 in a numeric field) and
    names that are not form fields change nothing."""
    out: dict[str, Any] = {}
    for f in FIELDS:
        value = values.get(f.name)
        if _unset(value, f):
            continue
        node = out
        for key in f.path[:-1]:
            node = node.setdefault(key, {})
        node[f.path[-1]] = list(value) if isinstance(value, tuple) else value
    return out


def missing_without_spec(values: Mapping[str, Any]) -> list[str]:
    """The form fields a job needs that are unset (when there is no spec to take them from)."""
    return [f.name for f in FIELDS if f.required and _unset(values.get(f.name), f)]


def form_defaults(spec: JobSpec | Mapping[str, Any] | None) -> dict[str, Any]:
    """What the run form shows before anyone edits it: the spec's values (its defaults where it sets
    none), or every field unset when there is no spec. ``spec`` is a job spec document, already
    validated with its base directory (`tasks.resolve_spec`), or a `JobSpec`."""
    if spec is None:
        return dict.fromkeys(FIELD_NAMES)
    job = spec if isinstance(spec, JobSpec) else parse_spec(dict(spec), source="<run form defaults>")
    doc = job.model_dump(mode="json", by_alias=True)
    # A profile as the form shows it: what differs from a profile's defaults (the same profile when
    # validated again, short enough to edit, and without nulls, which Kubeflow's defaults cannot hold).
    doc["devices"] = [d.model_dump(mode="json", exclude_defaults=True) for d in job.devices]
    out: dict[str, Any] = {}
    for f in FIELDS:
        node: Any = doc
        for key in f.path:
            node = node.get(key) if isinstance(node, Mapping) else None
        out[f.name] = node
    return out


@functools.cache
def spec_defaults() -> dict[str, Any]:
    """The job spec's own default for each form field a job does not need (what an unset field means
    when no spec sets it either)."""
    placeholder = {
        "name": "job",
        "model": {"format": "onnx", "uri": "model.onnx"},
        "data": {"uri": "data"},
        "registry": {"model_name": "model"},
    }
    values = form_defaults(parse_spec(placeholder, source="<the spec's defaults>"))
    return {f.name: values[f.name] for f in FIELDS if not f.required}


@functools.cache
def _constraints() -> dict[tuple[str, ...], dict[str, Any]]:
    schema = JobSpec.model_json_schema(by_alias=True)
    defs = schema.get("$defs", {})

    def deref(node: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
        return node

    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for f in FIELDS:
        node: Mapping[str, Any] = schema
        for key in f.path:
            node = deref(deref(node)["properties"][key])
        if f.type == "array":  # a profile object's own schema is the spec's business
            out[f.path] = {}
            continue
        options = node.get("anyOf", [node])
        chosen = next((o for o in options if o.get("type") != "null"), node)
        out[f.path] = {k: chosen[k] for k in _CONSTRAINTS if k in chosen}
    return out
