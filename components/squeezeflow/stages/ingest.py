"""Ingest: bring the dataset and the model source in, validate the data with Great Expectations,
record their content hashes, and open the job's MLflow run."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from squeezeflow.data import SPLITS, Dataset
from squeezeflow.errors import DataValidationError
from squeezeflow.gate.perturb import check_perturbations
from squeezeflow.library_output import quiet_great_expectations
from squeezeflow.models.huggingface import ARCHIVE_SUFFIX, check_token_ids, pack_checkpoint
from squeezeflow.models.sources import inline_external_data
from squeezeflow.results import DatasetInfo, IngestResult, ValidationSummary, content_key
from squeezeflow.spec.job import JobSpec
from squeezeflow.stages.context import StageContext
from squeezeflow.store.artifacts import sha256_file
from squeezeflow.store.s3 import download_uri

log = logging.getLogger(__name__)


def _split_frame(ds: Dataset, split: str) -> Any:
    import pandas as pd

    s = ds.split(split)
    # an explicit width: reshape(0, -1) is ambiguous and fails on an empty split
    flat = s.x.reshape(len(s), int(np.prod(s.x.shape[1:])))
    if np.issubdtype(flat.dtype, np.integer):
        # token ids: always finite; min/max as float64 (an int min with a float initial does not cast)
        flat = flat.astype(np.float64)
    finite = np.isfinite(flat).all(axis=1)
    with np.errstate(invalid="ignore"):
        return pd.DataFrame(
            {
                "label": s.y,
                "finite": finite,
                "x_min": np.where(finite, flat.min(axis=1, initial=np.inf), np.nan),
                "x_max": np.where(finite, flat.max(axis=1, initial=-np.inf), np.nan),
            }
        )


def validate_with_gx(ds: Dataset) -> tuple[bool, int, list[str], dict[str, Any]]:
    """Run the dataset's expectation suite, one batch per split. Returns (success, evaluated,
    failed descriptions, full JSON report)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    quiet_great_expectations()
    import great_expectations as gx

    quiet_great_expectations()  # its import set one of them back to INFO
    ctx = gx.get_context(mode="ephemeral")
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # progress bars are cosmetic; older/newer GX may lay this out differently
        log.debug("could not turn off Great Expectations progress bars")
    source = ctx.data_sources.add_pandas("squeezeflow")
    k = ds.meta.num_classes
    report: dict[str, Any] = {}
    failed: list[str] = []
    evaluated = 0
    for split in SPLITS:
        asset = source.add_dataframe_asset(name=split)
        batch = asset.add_batch_definition_whole_dataframe(f"{split}-all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"squeezeflow-{split}"))
        suite.add_expectation(gx.expectations.ExpectTableRowCountToBeBetween(min_value=1))
        suite.add_expectation(gx.expectations.ExpectColumnValuesToNotBeNull(column="label"))
        suite.add_expectation(
            gx.expectations.ExpectColumnValuesToBeBetween(column="label", min_value=0, max_value=k - 1)
        )
        suite.add_expectation(gx.expectations.ExpectColumnValuesToBeInSet(column="finite", value_set=[True]))
        if np.issubdtype(ds.split(split).x.dtype, np.integer):
            # token ids index an embedding table: never negative
            suite.add_expectation(gx.expectations.ExpectColumnValuesToBeBetween(column="x_min", min_value=0))
        if split == "train":
            # every class must be present in the training data
            suite.add_expectation(
                gx.expectations.ExpectColumnDistinctValuesToEqualSet(column="label", value_set=list(range(k)))
            )
        vd = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=f"validate-{split}", data=batch, suite=suite)
        )
        res = vd.run(batch_parameters={"dataframe": _split_frame(ds, split)})
        doc = res.to_json_dict()
        report[split] = doc
        for r in doc["results"]:
            evaluated += 1
            if not r["success"]:
                cfg = r["expectation_config"]
                kw = {kk: v for kk, v in cfg["kwargs"].items() if kk != "batch_id"}
                detail = r.get("result", {})
                sample = detail.get("partial_unexpected_list") or detail.get("observed_value")
                failed.append(f"{split}: {cfg['type']} {kw} failed (unexpected: {str(sample)[:120]})")
    return not failed, evaluated, failed, report


def _class_counts(ds: Dataset) -> dict[str, list[int]]:
    k = ds.meta.num_classes
    out = {}
    for split in SPLITS:
        y = ds.split(split).y
        y = y[(y >= 0) & (y < k)]
        out[split] = np.bincount(y, minlength=k).astype(int).tolist()
    return out


def _declared_pad_id(ds: Dataset) -> int | None:
    """The pad id a token dataset's dataset.json declares: ``pad_token_id``, top level or in its
    ``tokenizer`` section (as squeezeflow's own text datasets write it); None where it declares none."""
    extra = ds.meta.model_extra or {}
    tokenizer = extra.get("tokenizer")
    for value in (
        extra.get("pad_token_id"),
        tokenizer.get("pad_token_id") if isinstance(tokenizer, dict) else None,
    ):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def ingest(spec: JobSpec, ctx: StageContext) -> IngestResult:
    """Validate and fingerprint the job's inputs. Idempotent: the same spec, data and model return the
    recorded result without re-running validation."""
    ds = ctx.dataset(spec.data.uri)
    suffix = ARCHIVE_SUFFIX if spec.model.format == "huggingface" else Path(spec.model.uri).suffix
    if spec.model.format == "huggingface":
        # the checkpoint's folder, checked (no pickles, no remote code) and packed into one artifact
        model_local = pack_checkpoint(spec.model.uri, ctx.scratch("ingest") / f"model-source{suffix}")
    else:
        model_local = download_uri(spec.model.uri, ctx.scratch("ingest") / f"model-source{suffix}")
    if spec.model.format == "onnx":
        # weights kept in files beside the model travel inside it from here on (one artifact, one hash)
        model_local = inline_external_data(model_local, spec.model.uri, download_uri)
    model_sha = sha256_file(model_local)
    spec_digest = spec.digest()
    key = content_key("ingest", spec_digest, ds.sha256, model_sha)
    recorded = ctx.store.read_record("ingest", key)
    if recorded is not None:
        log.info("ingest: inputs unchanged, using the recorded result %s", key)
        return IngestResult.model_validate(recorded)

    if spec.tolerance.robustness is not None:
        # A perturbation that cannot apply to these inputs is a spec error: say so before any work.
        check_perturbations(ds.split("test").x[:2], spec.tolerance.robustness.perturbations)
    success, evaluated, failed, report = validate_with_gx(ds)
    scratch = ctx.scratch(f"ingest-{key}")
    report_path = scratch / "gx_validation.json"
    report_path.write_text(json.dumps(report, indent=1, default=str))
    report_ref = ctx.store.put_file(report_path, suffix=".json")
    if not success:
        raise DataValidationError(
            "dataset failed validation:\n  - " + "\n  - ".join(failed), report_uri=report_ref.uri
        )

    if spec.model.format == "huggingface" and np.issubdtype(ds.split("train").x.dtype, np.integer):
        xs = [ds.split(s).x for s in SPLITS if ds.split(s).x.size]
        check_token_ids(
            spec.model.uri,
            model_local,
            max_id=max(int(x.max()) for x in xs),
            min_id=min(int(x.min()) for x in xs),
            pad_id=_declared_pad_id(ds),
        )

    counts = _class_counts(ds)
    train_counts = [c for c in counts["train"] if c > 0]
    model_ref = ctx.store.put_file(model_local, suffix=suffix)
    parent = ctx.tracker.job_run(
        key,
        run_name=spec.name,
        tags={
            "squeezeflow.spec_digest": spec_digest,
            "squeezeflow.dataset_sha256": ds.sha256,
            "squeezeflow.baseline_source": spec.model.uri,
            "squeezeflow.baseline_sha256": model_sha,
        },
    )
    ctx.tracker.log(
        parent,
        params={
            "model.format": spec.model.format,
            "model.uri": spec.model.uri,
            "data.uri": spec.data.uri,
            "task.metric": spec.task.metric,
            "tolerance.mode": spec.tolerance.mode,
            "tolerance.max_drop": spec.tolerance.max_drop,
            "objective": spec.objective,
            "target_device": spec.target.name,
        },
        metrics={f"data.{s}_size": float(len(ds.split(s))) for s in SPLITS},
    )
    ctx.tracker.log_text(
        parent, json.dumps(spec.model_dump(mode="json", by_alias=True), indent=2), "spec.json"
    )
    ctx.tracker.log_artifact(parent, report_path, "validation")
    result = IngestResult(
        key=key,
        job_key=key,
        spec_digest=spec_digest,
        dataset=DatasetInfo(
            uri=spec.data.uri,
            sha256=ds.sha256,
            name=ds.meta.name,
            num_classes=ds.meta.num_classes,
            input_shape=list(ds.meta.input_shape),
            input_dtype="int64" if ds.split("train").x.dtype == np.int64 else "float32",
            split_sizes={s: len(ds.split(s)) for s in SPLITS},
            class_counts=counts,
            imbalance_ratio=float(max(train_counts) / min(train_counts)),
            warnings=ds.warnings,
        ),
        model_source=model_ref,
        validation=ValidationSummary(success=True, evaluated=evaluated, failed=[], report=report_ref),
        parent_run_id=parent,
    )
    ctx.store.write_record("ingest", key, result)
    return result
