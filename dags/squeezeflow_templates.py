"""Platform-team templates: every job spec in ``dags/jobs/`` (or ``$SQUEEZEFLOW_JOBS_DIR``) becomes a
compression DAG ``squeezeflow_compress_<job name>``, triggered from the UI with typed params.

A spec that does not validate produces no DAG and an import warning naming the file and the field; the
other DAGs are unaffected.

Configuration (read at parse time): ``SQUEEZEFLOW_SPEC`` (the job spec; default the demo's spec in
``dags/jobs/``), ``SQUEEZEFLOW_JOBS_DIR``; at run time the operators read ``SQUEEZEFLOW_ARTIFACTS`` (the
artifact store) and the connections ``squeezeflow_mlflow`` (type ``mlflow``) and ``aws_default``.
"""

from __future__ import annotations

import os
from pathlib import Path

from squeezeflow.airflow.factory import dags_from_folder

JOBS_DIR = Path(os.environ.get("SQUEEZEFLOW_JOBS_DIR", Path(__file__).resolve().parent / "jobs"))

globals().update(dags_from_folder(JOBS_DIR))
