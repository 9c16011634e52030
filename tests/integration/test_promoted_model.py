"""The promoted model in a user's hands: loaded from the registry of a real MLflow tracking server with
``mlflow.pyfunc.load_model``, it answers with class names, scores and logits, for one sample or a batch,
and its file is, byte for byte, the one the gate and the benchmark read."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from squeezeflow.stages import Settings, StageContext, baseline, ingest
from squeezeflow.tracking.models import TAG_MODEL_ID
from tests.reference import job_doc
from tests.servers import MlflowServer

pytestmark = pytest.mark.integration


def test_promoted_model_returns_labels_scores_and_logits_for_a_sample_or_a_batch(
    mlflow_server: MlflowServer, tiny_model: Path, small_data: Path, tmp_path: Path
) -> None:
    from squeezeflow.spec.load import parse_spec

    ctx = StageContext.open(
        Settings(
            artifacts=str(tmp_path / "a"), tracking_uri=mlflow_server.tracking_uri, workdir=tmp_path / "w"
        ),
        "promoted-model",
    )
    spec = parse_spec(job_doc(tiny_model, small_data, name="promoted-model"))
    base = baseline(spec, ingest(spec, ctx), ctx)
    model_id = ctx.tracker.run_tags(base.parent_run_id)[TAG_MODEL_ID]
    # registered and aliased as the promote stage does
    mv = ctx.tracker.register(model_id, "promoted-model", base.parent_run_id, {}, "the baseline")
    ctx.tracker.set_alias("promoted-model", "champion", str(mv.version))

    mlflow.set_tracking_uri(mlflow_server.tracking_uri)
    mlflow.set_registry_uri(mlflow_server.tracking_uri)
    uri = "models:/promoted-model@champion"
    served = Path(mlflow.artifacts.download_artifacts(f"{uri}/model.onnx", dst_path=str(tmp_path / "dl")))
    assert hashlib.sha256(served.read_bytes()).hexdigest() == base.onnx.sha256  # the gated file

    names = json.loads((small_data / "dataset.json").read_text())["class_names"]
    x = np.load(small_data / "test.npz")["x"][:8]
    model = mlflow.pyfunc.load_model(uri)
    batch = model.predict(x)
    assert set(batch) >= {"label", "scores", "logits"}
    assert batch["logits"].shape == batch["scores"].shape == (8, len(names))
    np.testing.assert_allclose(batch["scores"].sum(axis=1), 1.0, rtol=1e-5)
    assert list(batch["label"]) == [names[i] for i in batch["logits"].argmax(axis=1)]

    one = model.predict(x[0])  # one sample, without the batch dimension
    assert list(one["label"]) == [batch["label"][0]]
    np.testing.assert_allclose(one["scores"], batch["scores"][:1], rtol=1e-5, atol=1e-6)
