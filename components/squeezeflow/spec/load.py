"""Loading a job spec: validate a parsed document or a YAML/JSON file once, with messages that name the
field and what is allowed; check that local inputs exist; export the JSON Schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from squeezeflow.errors import SpecError
from squeezeflow.spec.document import read_spec_file
from squeezeflow.spec.job import JobSpec


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
