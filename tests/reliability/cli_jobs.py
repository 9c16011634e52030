"""Fresh `squeezeflow run` jobs for the reliability tests, as separate processes.

A `CliJob` has a spec of its own (nothing is recorded for it yet, so every stage runs, MLflow
LoggedModels included) on the reliability suite's wide CNN and data subset, a local artifact store,
and reaches the session MLflow server through a tracking URI that carries a password (the server does
not check it; what matters is that the job never shows it).
"""

from __future__ import annotations

import os
import secrets
import string
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from tests.reference import REPO, write_spec
from tests.reliability.conftest import onnx_job_doc
from tests.servers import MlflowServer

SQUEEZEFLOW = str(Path(sys.executable).with_name("squeezeflow"))


@dataclass
class CliJob:
    name: str
    spec: Path
    dir: Path
    mlflow: MlflowServer
    password: str

    @property
    def model_name(self) -> str:
        return f"{self.name}-model"

    @property
    def tracking_uri(self) -> str:
        """The session server's URI with a user and this job's password in it."""
        return self.mlflow.tracking_uri.replace("http://", f"http://sqf-user:{self.password}@")

    def argv(self, workdir: str, result: str) -> list[str]:
        return [
            SQUEEZEFLOW,
            "run",
            str(self.spec),
            "--no-progress",
            "--verbose",
            "--tracking-uri",
            self.tracking_uri,
            "--artifacts",
            str(self.dir / "artifacts"),
            "--workdir",
            str(self.dir / workdir),
            "--result",
            str(self.dir / result),
        ]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SQUEEZEFLOW_"))}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        return env

    def start(self, workdir: str, result: str) -> subprocess.Popen[str]:
        """The job as a process; its stdout and stderr go to files named after ``result``."""
        out = (self.dir / f"{result}.out").open("w")
        err = (self.dir / f"{result}.err").open("w")
        with out, err:
            return subprocess.Popen(
                self.argv(workdir, result), stdout=out, stderr=err, text=True, env=self.env(), cwd=REPO
            )

    def output(self, result: str) -> tuple[str, str]:
        return (self.dir / f"{result}.out").read_text(), (self.dir / f"{result}.err").read_text()

    def client(self) -> MlflowClient:
        uri = self.mlflow.tracking_uri
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def experiment_id(self) -> str:
        exp = self.client().get_experiment_by_name(self.name)
        assert exp is not None, f"no experiment {self.name}"
        return str(exp.experiment_id)


def new_job(tmp: Path, mlflow: MlflowServer, model: Path, data: Path, tag: str, **doc: Any) -> CliJob:
    name = f"{tag}-{uuid.uuid4().hex[:8]}"
    password = "sqfPw-" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(20))
    spec = write_spec(tmp / "job.yaml", {**onnx_job_doc(model, data, name=name), **doc})
    return CliJob(name=name, spec=spec, dir=tmp, mlflow=mlflow, password=password)
