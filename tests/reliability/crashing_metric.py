"""A user metric that fails when it is first computed (on the baseline, once the job's MLflow run is
open), referenced as ``tests.reliability.crashing_metric:crash`` by `test_job_run_status.py`: a job
that crashes with an error squeezeflow does not expect (exit 4)."""

from __future__ import annotations

import numpy as np


def crash(labels: np.ndarray, logits: np.ndarray) -> float:
    raise RuntimeError("the metric crashed (on purpose, in a test)")
