"""``squeezeflow_compress_on_new_model``: compress a baseline as soon as one is announced.

Runs when the job's baseline asset (``squeezeflow://baselines/<job name>``) gets an event (the retrain
DAG emits one; any DAG can, with ``extra={"model_uri": ...}``), and manually from the UI with typed
params (model URI, tolerance, device profiles), which the job spec validates.

Configuration (read at parse time): ``SQUEEZEFLOW_SPEC`` (the job spec; default the demo's spec in
``dags/jobs/``), ``SQUEEZEFLOW_JOBS_DIR``; at run time the operators read ``SQUEEZEFLOW_ARTIFACTS`` (the
artifact store) and the connections ``squeezeflow_mlflow`` (type ``mlflow``) and ``aws_default``.
"""

from __future__ import annotations

import os
from pathlib import Path

from squeezeflow import tasks
from squeezeflow.airflow.factory import baseline_asset, compress_dag

SPEC = os.environ.get("SQUEEZEFLOW_SPEC", str(Path(__file__).resolve().parent / "jobs" / "animal_mnist.yaml"))

_spec = tasks.resolve_spec(SPEC)

dag = compress_dag(
    SPEC,
    spec=_spec,
    dag_id="squeezeflow_compress_on_new_model",
    schedule=[baseline_asset(_spec["name"])],
    tags=["asset-triggered"],
)
