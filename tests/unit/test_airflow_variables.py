"""The Airflow provider's artifact store: the operator's argument, else the Airflow Variable
``squeezeflow_artifacts`` (set here the way the Airflow chart overlay sets it, as
``AIRFLOW_VAR_SQUEEZEFLOW_ARTIFACTS``, which Airflow's own Variable lookup finds), else
``$SQUEEZEFLOW_ARTIFACTS``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

VARIABLE_ENV = "AIRFLOW_VAR_SQUEEZEFLOW_ARTIFACTS"
ARTIFACTS_ENV = "SQUEEZEFLOW_ARTIFACTS"


def _artifacts_seen_by_a_stage(tmp_path: Path, artifacts: str | None = None) -> str:
    """Run a stage operator (without connections) whose stage returns the artifact store it was given."""
    from airflow.sdk import Context

    from squeezeflow.airflow.operators import SqueezeflowBaseOperator
    from squeezeflow.stages import Settings

    class ArtifactsProbe(SqueezeflowBaseOperator):
        def run_stage(self, settings: Settings, context: Context) -> Any:
            return settings.artifacts

    probe = ArtifactsProbe(
        task_id="probe",
        spec={},
        mlflow_conn_id=None,
        aws_conn_id=None,
        artifacts=artifacts,
        workdir=str(tmp_path / "work"),
    )
    context: Any = {}
    return str(probe.execute(context))


@pytest.fixture
def neither_variable_nor_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(VARIABLE_ENV, raising=False)
    monkeypatch.delenv(ARTIFACTS_ENV, raising=False)
    # An embedded tracking store for Settings, away from the working directory.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.mark.usefixtures("neither_variable_nor_env")
def test_stage_without_an_artifacts_argument_uses_the_airflow_variable_before_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from airflow.sdk import Variable

    monkeypatch.setenv(VARIABLE_ENV, "s3://from-variable/squeezeflow")
    monkeypatch.setenv(ARTIFACTS_ENV, "s3://from-env/squeezeflow")
    assert Variable.get("squeezeflow_artifacts") == "s3://from-variable/squeezeflow"
    assert _artifacts_seen_by_a_stage(tmp_path) == "s3://from-variable/squeezeflow"


@pytest.mark.usefixtures("neither_variable_nor_env")
def test_the_operators_artifacts_argument_wins_over_the_airflow_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(VARIABLE_ENV, "s3://from-variable/squeezeflow")
    assert _artifacts_seen_by_a_stage(tmp_path, "s3://from-argument/x") == "s3://from-argument/x"


@pytest.mark.usefixtures("neither_variable_nor_env")
def test_without_the_airflow_variable_the_environment_gives_the_artifact_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ARTIFACTS_ENV, "s3://from-env/squeezeflow")
    assert _artifacts_seen_by_a_stage(tmp_path) == "s3://from-env/squeezeflow"


@pytest.mark.usefixtures("neither_variable_nor_env")
def test_an_empty_airflow_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(VARIABLE_ENV, "")
    monkeypatch.setenv(ARTIFACTS_ENV, "s3://from-env/squeezeflow")
    assert _artifacts_seen_by_a_stage(tmp_path) == "s3://from-env/squeezeflow"


@pytest.mark.usefixtures("neither_variable_nor_env")
def test_with_no_artifact_store_anywhere_the_task_fails_naming_all_three_places(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no artifact store") as err:
        _artifacts_seen_by_a_stage(tmp_path)
    for place in ("artifacts=", "squeezeflow_artifacts", VARIABLE_ENV, ARTIFACTS_ENV):
        assert place in str(err.value), place
