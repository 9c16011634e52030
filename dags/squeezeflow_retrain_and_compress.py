"""``squeezeflow_retrain_and_compress``: scheduled retraining, then the full compression pipeline on
the new model.

The retrain task calls ``$SQUEEZEFLOW_TRAIN_ENTRYPOINT`` (``module:callable``, called as
``fn(data_dir=..., output_path=..., base_model_uri=..., **train_kwargs)``; it writes a state_dict the
spec's factory builds), stores the new model in the artifact store and announces it on the job's
baseline asset; the compression tasks then run on that model. ``$SQUEEZEFLOW_TRAIN_KWARGS`` (JSON) is
passed to the entry point.

Configuration (read at parse time): ``SQUEEZEFLOW_SPEC`` (the job spec; default the demo's spec in
``dags/jobs/``), ``SQUEEZEFLOW_JOBS_DIR``; at run time the operators read ``SQUEEZEFLOW_ARTIFACTS`` (the
artifact store) and the connections ``squeezeflow_mlflow`` (type ``mlflow``) and ``aws_default``.

Each run reads the spec file when it starts (``read_spec``), so an edit takes effect on the next run;
parsing reads it only for the DAG's shape. A spec that cannot be read leaves the DAG in place with an
import warning, and its runs fail in ``read_spec`` with the spec's message.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from squeezeflow.airflow.factory import retrain_and_compress_dag

SPEC = os.environ.get("SQUEEZEFLOW_SPEC", str(Path(__file__).resolve().parent / "jobs" / "animal_mnist.yaml"))
TRAIN_ENTRYPOINT = os.environ.get("SQUEEZEFLOW_TRAIN_ENTRYPOINT", "squeezeflow.zoo.train:train_zoo_model")
TRAIN_KWARGS = json.loads(
    os.environ.get("SQUEEZEFLOW_TRAIN_KWARGS", '{"model": "small_resnet", "epochs": 20}')
)
RETRAIN_SCHEDULE = os.environ.get("SQUEEZEFLOW_RETRAIN_SCHEDULE", "@weekly")

dag = retrain_and_compress_dag(
    SPEC, entrypoint=TRAIN_ENTRYPOINT, train_kwargs=TRAIN_KWARGS, schedule=RETRAIN_SCHEDULE
)
