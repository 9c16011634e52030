"""The longest alias and registered model name the job spec accepts are what the MLflow registry
accepts, tag keys squeezeflow builds from them included.

What the tests prove: the limits mirrored in `squeezeflow.tracking.registry_tags` are the installed MLflow's;
every registry tag key squeezeflow builds from the longest accepted alias fits MLflow's 250-character
limit exactly (one character more would not); an alias and a model name of exactly those lengths
promote twice and roll back through a real MLflow server, every move recorded in the alias history;
one character more in either is refused by the spec before any work (`squeezeflow run` exits 2 naming
the field and the limit) and nothing reaches the registry.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from squeezeflow.results import CandidateOutcome
from squeezeflow.stages.promote import promote
from squeezeflow.tracking import registry_tags
from squeezeflow.tracking.registry_tags import MAX_ALIAS_LENGTH, MAX_MODEL_NAME_LENGTH, alias_tag_keys
from squeezeflow.tracking.tracker import Tracker
from tests.reference import write_spec
from tests.reliability.conftest import World
from tests.servers import MlflowServer

SQUEEZEFLOW = str(Path(sys.executable).with_name("squeezeflow"))


def _p50(o: CandidateOutcome) -> float:
    return o.benchmarks[0].p50_ms


def test_the_limits_squeezeflow_mirrors_are_the_installed_mlflows() -> None:
    from mlflow.store.model_registry.dbmodels.models import SqlRegisteredModel
    from mlflow.utils import validation

    assert registry_tags.MLFLOW_MAX_REGISTRY_TAG_KEY_LENGTH == validation.MAX_MODEL_REGISTRY_TAG_KEY_LENGTH
    assert registry_tags.MLFLOW_MAX_ALIAS_LENGTH == validation.MAX_REGISTERED_MODEL_ALIAS_LENGTH
    assert SqlRegisteredModel.__table__.c.name.type.length == registry_tags.MLFLOW_MAX_MODEL_NAME_LENGTH


def test_every_tag_key_built_from_the_longest_alias_fits_and_one_more_character_would_not() -> None:
    longest = max(len(k) for k in alias_tag_keys("a" * MAX_ALIAS_LENGTH))
    assert longest == registry_tags.MLFLOW_MAX_REGISTRY_TAG_KEY_LENGTH
    assert max(len(k) for k in alias_tag_keys("a" * (MAX_ALIAS_LENGTH + 1))) > longest
    assert MAX_ALIAS_LENGTH < registry_tags.MLFLOW_MAX_ALIAS_LENGTH


@pytest.mark.integration
def test_the_longest_alias_and_model_name_the_spec_accepts_promote_and_roll_back(
    world: World, mlflow_server: MlflowServer, one_at_a_time: None
) -> None:
    uri = mlflow_server.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    ctx = world.context()
    _, base, target, outcomes = world.records()
    slow, fast = sorted(outcomes, key=_p50, reverse=True)
    assert _p50(slow) > _p50(fast), "the two candidates measured the same: nothing to rank"
    prefix = f"limits-{uuid.uuid4().hex[:8]}-"
    name = prefix + "m" * (MAX_MODEL_NAME_LENGTH - len(prefix))
    alias = "a" * MAX_ALIAS_LENGTH
    spec = world.spec(name, registry={"model_name": name, "alias": alias})
    assert (len(spec.registry.model_name), len(spec.registry.alias)) == (256, 203)

    first = promote(spec, world.another_job(ctx, f"{prefix}1"), base, target, [slow], ctx)
    second = promote(spec, world.another_job(ctx, f"{prefix}2"), base, target, [fast], ctx)
    assert first.promoted and second.promoted, (first.reason, second.reason)
    assert (first.version, second.version, second.previous_version) == ("1", "2", "1")

    back = subprocess.run(
        [SQUEEZEFLOW, "rollback", name, "--alias", alias, "--tracking-uri", uri],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert back.returncode == 0, back.stderr
    assert str(client.get_model_version_by_alias(name, alias).version) == "1"
    history = Tracker(uri, None).alias_history(name, alias)
    assert [(m.kind, m.from_version, m.to_version) for m in history] == [
        ("promote", None, "1"),
        ("promote", "1", "2"),
        ("rollback", "2", "1"),
    ]
    assert client.get_model_version(name, "2").tags[f"squeezeflow.contest.{alias}"] == "won"
    # the keys squeezeflow wrote are as long as MLflow allows, and no longer
    keys = [*client.get_registered_model(name).tags, *client.get_model_version(name, "2").tags]
    assert max(len(k) for k in keys) == 250


@pytest.mark.integration
def test_an_alias_or_model_name_one_character_too_long_is_refused_with_exit_2(
    world: World, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    name = f"limits-{uuid.uuid4().hex[:8]}"
    doc = {
        **world.doc,
        "registry": {
            "model_name": name + "m" * (MAX_MODEL_NAME_LENGTH + 1 - len(name)),
            "alias": "a" * (MAX_ALIAS_LENGTH + 1),
        },
    }
    spec = write_spec(tmp_path / "job.yaml", doc)
    uri = mlflow_server.tracking_uri
    job = subprocess.run(
        [SQUEEZEFLOW, "run", str(spec), "--no-progress", "--tracking-uri", uri, "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    error = " ".join(job.stderr.split())
    assert job.returncode == 2, job.stderr[-3000:]
    assert "registry.alias: String should have at most 203 characters" in error, error
    assert "registry.model_name: String should have at most 256 characters" in error, error
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.search_registered_models(f"name LIKE '{name}%'") == []
