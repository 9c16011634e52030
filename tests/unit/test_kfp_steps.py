"""What the Kubeflow steps show, from the records the stages keep (no step re-runs a stage's work)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("kfp")
from kfp.dsl import ClassificationMetrics

from squeezeflow.errors import InvalidInputError
from squeezeflow.kfp.steps import _confusion
from squeezeflow.stages import Settings
from squeezeflow.store.artifacts import open_store


def test_the_gate_step_shows_the_confusion_matrix_from_the_gates_evidence(tmp_path: Path) -> None:
    settings = Settings(artifacts=str(tmp_path / "store"), tracking_uri="unused://", workdir=tmp_path / "w")
    kept = {"classes": ["cat", "dog"], "matrix": [[7, 1], [0, 9]]}
    evidence = open_store(settings.artifacts).put_bytes(
        json.dumps({"passed": True, "confusion_matrix": kept}).encode(), suffix=".json"
    )
    shown = ClassificationMetrics(name="confusion", uri=str(tmp_path / "c"), metadata={})
    # the gate record names its evidence; no model, dataset or tracking server is needed to show it
    _confusion(settings, evidence, shown)
    assert shown.metadata["confusionMatrix"] == {
        "annotationSpecs": [{"displayName": "cat"}, {"displayName": "dog"}],
        "rows": [{"row": [7, 1]}, {"row": [0, 9]}],
    }

    older = open_store(settings.artifacts).put_bytes(b'{"passed": true}', suffix=".json")
    with pytest.raises(InvalidInputError, match="no confusion matrix"):
        _confusion(settings, older, shown)
