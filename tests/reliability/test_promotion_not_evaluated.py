"""A candidate the engine measured slower than the baseline and never sent to the gate is reported at
promotion as exactly that, not as missing or tampered evidence.

What the test proves: dynamic int8 of the wide CNN (ONNX Runtime's ConvInteger is several times slower
than float convolution on a CPU), built by the engine for the reliability world's job, is measured
first and skipped (``search.skip_slower_than``); promotion refuses it with the reason "not evaluated:
slower than the baseline on <profile> (<ratio>x: p50 ... vs ...)" and the registry is untouched.
"""

from __future__ import annotations

import re
import uuid

import pytest
from mlflow import MlflowClient

from squeezeflow.search.policy import run_trial
from squeezeflow.spec.search import Recipe
from squeezeflow.stages.promote import promote
from tests.reliability.conftest import World
from tests.servers import MlflowServer

pytestmark = pytest.mark.integration

DYNAMIC = Recipe.model_validate({"name": "int8-dynamic", "steps": [{"name": "ort_dynamic_int8"}]})


def test_a_candidate_skipped_as_slower_is_refused_as_not_evaluated_with_its_measured_ratio(
    world: World, mlflow_server: MlflowServer, one_at_a_time: None
) -> None:
    ctx = world.context()
    ing, base, target, _ = world.records()
    name = f"not-evaluated-{uuid.uuid4().hex[:6]}"
    spec = world.spec(name)
    assert spec.search.skip_slower_than == 1.5
    outcome = run_trial(spec, ing, base, DYNAMIC, ctx)
    assert outcome.gate.n == 0 and not outcome.gate.passed, "the candidate went to the gate"

    result = promote(spec, ing, base, target, [outcome], ctx)
    assert not result.promoted
    assert "missing" not in result.reason and "record" not in result.reason, result.reason
    shown = re.search(
        rf"int8-dynamic: not evaluated: slower than the baseline on {target.profile} "
        r"\((\d+\.\d\d)x: p50 (\d+\.\d+) ms vs (\d+\.\d+) ms, over search\.skip_slower_than 1\.5\), "
        "so it can never be promoted",
        result.reason,
    )
    assert shown is not None, result.reason
    ratio, mine, theirs = (float(g) for g in shown.groups())
    assert ratio > 1.5 and ratio == pytest.approx(mine / theirs, rel=0.01)
    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri)
    assert client.search_registered_models(f"name = '{name}'") == []
