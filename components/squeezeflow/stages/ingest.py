"""Ingest: bring the dataset and the model source in, validate the data with Great Expectations,
record their content hashes, and open the job's MLflow run."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from squeezeflow.data import SPLITS, TEXT_FORMAT, Dataset, fetch_dataset, load_dataset
from squeezeflow.errors import DataValidationError, InvalidInputError
from squeezeflow.gate.perturb import check_perturbations
from squeezeflow.library_output import quiet_great_expectations
from squeezeflow.models.huggingface import (
    ARCHIVE_SUFFIX,
    check_local_checkpoint,
    check_token_ids,
    checkpoint_folder,
    pack_checkpoint,
    tokenize_texts,
)
from squeezeflow.models.sources import inline_external_data
from squeezeflow.results import DatasetInfo, IngestResult, TokenizedText, ValidationSummary, content_key
from squeezeflow.spec.job import JobSpec
from squeezeflow.stages.context import StageContext
from squeezeflow.store.artifacts import sha256_file
from squeezeflow.store.s3 import download_uri
from squeezeflow.text_data import (
    DEFAULT_MAX_LENGTH,
    TextDataset,
    descriptor_format,
    load_text_dataset,
    text_frame,
    text_problems,
    write_token_dataset,
)

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


def _gx_context() -> tuple[Any, Any]:
    """Great Expectations (the module) and an ephemeral, quiet context."""
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
    return gx, ctx


def _failed(split: str, doc: dict[str, Any]) -> list[str]:
    failed = []
    for r in doc["results"]:
        if not r["success"]:
            cfg = r["expectation_config"]
            kw = {kk: v for kk, v in cfg["kwargs"].items() if kk != "batch_id"}
            detail = r.get("result", {})
            sample = detail.get("partial_unexpected_list") or detail.get("observed_value")
            failed.append(f"{split}: {cfg['type']} {kw} failed (unexpected: {str(sample)[:120]})")
    return failed


def validate_text_with_gx(ds: TextDataset) -> tuple[bool, int, list[str], dict[str, Any]]:
    """The raw-text suite, one batch per split (`squeezeflow.text_data.text_frame`): at least one row,
    every ``text`` a string and not empty, every ``label`` there and in ``[0, num_classes)``, every class
    in train. Returns (success, evaluated, failed descriptions, full JSON report)."""
    gx, ctx = _gx_context()
    source = ctx.data_sources.add_pandas("squeezeflow-text")
    k = ds.meta.num_classes
    report: dict[str, Any] = {}
    failed: list[str] = []
    evaluated = 0
    for split in SPLITS:
        asset = source.add_dataframe_asset(name=f"text-{split}")
        batch = asset.add_batch_definition_whole_dataframe(f"text-{split}-all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"squeezeflow-text-{split}"))
        suite.add_expectation(gx.expectations.ExpectTableRowCountToBeBetween(min_value=1))
        suite.add_expectation(
            gx.expectations.ExpectColumnValuesToBeInSet(column="text_is_string", value_set=[True])
        )
        suite.add_expectation(gx.expectations.ExpectColumnValuesToBeBetween(column="text_chars", min_value=1))
        suite.add_expectation(gx.expectations.ExpectColumnValuesToNotBeNull(column="label"))
        suite.add_expectation(
            gx.expectations.ExpectColumnValuesToBeBetween(column="label", min_value=0, max_value=k - 1)
        )
        if split == "train":
            suite.add_expectation(
                gx.expectations.ExpectColumnDistinctValuesToEqualSet(
                    column="label", value_set=[float(c) for c in range(k)]
                )
            )
        vd = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=f"validate-text-{split}", data=batch, suite=suite)
        )
        doc = vd.run(batch_parameters={"dataframe": text_frame(ds.splits[split])}).to_json_dict()
        report[split] = doc
        evaluated += len(doc["results"])
        failed += _failed(split, doc)
    return not failed, evaluated, failed, report


def validate_with_gx(ds: Dataset) -> tuple[bool, int, list[str], dict[str, Any]]:
    """Run the dataset's expectation suite, one batch per split. Returns (success, evaluated,
    failed descriptions, full JSON report)."""
    gx, ctx = _gx_context()
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
        evaluated += len(doc["results"])
        failed += _failed(split, doc)
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


def raw_text_directory(uri: str, ctx: StageContext) -> Path | None:
    """The local directory of the dataset at ``uri`` when it holds raw text (``squeezeflow.text/v1``);
    None for any other dataset (read as squeezeflow.npz/v1, which says what is wrong with it)."""
    if uri.startswith("s3://"):
        probe = ctx.cache / "datasets" / f"probe-{content_key('probe', uri)}" / "dataset.json"
        try:
            download_uri(f"{uri.rstrip('/')}/dataset.json", probe)
        except InvalidInputError:
            return None  # missing: the npz reader says so
        if descriptor_format(probe.parent) != TEXT_FORMAT:
            return None
        return fetch_dataset(uri, ctx.cache)
    local = Path(uri)
    return local if local.is_dir() and descriptor_format(local) == TEXT_FORMAT else None


def _tokenize(
    spec: JobSpec, text: TextDataset, model_local: Path, key: str, ctx: StageContext
) -> tuple[dict[str, Any], int, TokenizedText, list[str]]:
    """Validate raw texts with their Great Expectations suite, tokenize them with the packed
    checkpoint's tokenizer and store the token-id dataset under ``datasets/<key>/``: (the suite's report,
    expectations evaluated, what was stored, warnings)."""
    checkpoint = check_local_checkpoint(checkpoint_folder(spec.model.uri, model_local), spec.model.uri)
    if checkpoint.kind != "text":
        raise DataValidationError(
            f"dataset {spec.data.uri} holds raw text ({TEXT_FORMAT}), but model {spec.model.uri} is an "
            f"image classifier ({checkpoint.architecture}), which has no tokenizer: give it pixel values "
            "in a squeezeflow.npz/v1 dataset"
        )
    success, evaluated, failed, report = validate_text_with_gx(text)
    if not success:
        scratch = ctx.scratch(f"ingest-{key}")
        report_path = scratch / "gx_text_validation.json"
        report_path.write_text(json.dumps(report, indent=1, default=str))
        ref = ctx.store.put_file(report_path, suffix=".json")
        problems = text_problems(text) or failed
        raise DataValidationError(
            f"raw-text dataset {spec.data.uri} failed validation:\n  - " + "\n  - ".join(problems),
            report_uri=ref.uri,
        )
    tok = tokenize_texts(
        spec.model.uri,
        model_local,
        {s: [str(t) for t in text.splits[s].text] for s in SPLITS},
        max_length=text.meta.max_length,
        cap=DEFAULT_MAX_LENGTH,
        num_classes=text.meta.num_classes,
    )
    local = write_token_dataset(
        text,
        tok.ids,
        ctx.scratch(f"ingest-{key}") / "tokenized",
        class_names=tok.label_names or text.meta.class_names,
        pad_token_id=tok.pad_token_id,
        tokenizer_of=spec.model.uri,
    )
    prefix = f"datasets/{key}"
    for f in sorted(local.iterdir()):
        ctx.store.put_file_at(f"{prefix}/{f.name}", f)
    uri = ctx.store.uri_of(prefix)
    sha = load_dataset(local).sha256
    warnings = [
        f"{n} of the {split} split's {len(text.splits[split])} texts are longer than {tok.max_length} "
        "tokens and were cut (declare a longer input_shape in dataset.json to keep more)"
        for split, n in tok.truncated.items()
        if n
    ]
    log.info("ingest: tokenized %s to %d token ids per text: %s", spec.data.uri, tok.max_length, uri)
    tokenized = TokenizedText(
        uri=uri, sha256=sha, max_length=tok.max_length, pad_token_id=tok.pad_token_id, truncated=tok.truncated
    )
    return report, evaluated, tokenized, warnings


def ingest(spec: JobSpec, ctx: StageContext) -> IngestResult:
    """Validate and fingerprint the job's inputs. Idempotent: the same spec, data and model return the
    recorded result without re-running validation."""
    text_dir = raw_text_directory(spec.data.uri, ctx)
    if text_dir is not None and spec.model.format != "huggingface":
        raise DataValidationError(
            f"dataset {spec.data.uri} holds raw text ({TEXT_FORMAT}), which ingest tokenizes with the "
            f"model's own tokenizer, but model.format {spec.model.format!r} has no tokenizer: use a "
            "Hugging Face text classifier (model.format: huggingface, saved with its tokenizer), or "
            "tokenize the texts yourself into a squeezeflow.npz/v1 dataset of int64 token ids "
            "(docs/dataset-format.md)"
        )
    text = load_text_dataset(text_dir) if text_dir is not None else None
    ds = ctx.dataset(spec.data.uri) if text is None else None
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
    if text is not None:
        data_sha = text.sha256
    else:
        assert ds is not None
        data_sha = ds.sha256
    key = content_key("ingest", spec_digest, data_sha, model_sha)
    recorded = ctx.store.read_record("ingest", key)
    if recorded is not None:
        log.info("ingest: inputs unchanged, using the recorded result %s", key)
        return IngestResult.model_validate(recorded)

    scratch = ctx.scratch(f"ingest-{key}")
    tokenized: TokenizedText | None = None
    text_report: dict[str, Any] = {}
    text_evaluated = 0
    warnings: list[str] = []
    if text is not None:
        text_report, text_evaluated, tokenized, warnings = _tokenize(spec, text, model_local, key, ctx)
        ds = ctx.dataset(tokenized.uri)
    assert ds is not None
    if spec.tolerance.robustness is not None:
        # A perturbation that cannot apply to these inputs is a spec error: say so before any work.
        check_perturbations(ds.split("test").x[:2], spec.tolerance.robustness.perturbations)
    success, evaluated, failed, report = validate_with_gx(ds)
    if text_report:
        report = {"raw_text": text_report, "token_ids": report}
        evaluated += text_evaluated
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
            "squeezeflow.dataset_sha256": data_sha,
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
            sha256=data_sha,
            name=ds.meta.name,
            num_classes=ds.meta.num_classes,
            input_shape=list(ds.meta.input_shape),
            input_dtype="int64" if ds.split("train").x.dtype == np.int64 else "float32",
            split_sizes={s: len(ds.split(s)) for s in SPLITS},
            class_counts=counts,
            imbalance_ratio=float(max(train_counts) / min(train_counts)),
            warnings=[*warnings, *ds.warnings],
            tokenized=tokenized,
        ),
        model_source=model_ref,
        validation=ValidationSummary(success=True, evaluated=evaluated, failed=[], report=report_ref),
        parent_run_id=parent,
    )
    ctx.store.write_record("ingest", key, result)
    return result
