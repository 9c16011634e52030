"""The run form (`squeezeflow.spec.run_form`) is one table that both front doors offer: the Airflow DAG's
trigger params and the Kubeflow pipelines' parameters have the same fields with the same defaults, a value
filled in reaches the job spec the same way through both, the generic pipeline makes a job from the form
alone, and a pipeline run's outputs name the promoted model."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("kfp")
pytest.importorskip("airflow")

from squeezeflow import tasks
from squeezeflow.airflow.factory import run_params
from squeezeflow.airflow.operators import SqueezeflowResolveSpecOperator
from squeezeflow.errors import SpecError
from squeezeflow.kfp import components as kfp_components
from squeezeflow.kfp import steps
from squeezeflow.kfp.pipelines import Champion, stamp
from squeezeflow.spec.run_form import FIELD_NAMES, FIELDS, form_defaults, form_overrides, unset_value
from tests.reference import TEST_DEVICE, job_doc

REPO = Path(__file__).resolve().parents[2]
CHECKED_IN = [REPO / "pipelines" / "compress.yaml", REPO / "pipelines" / "retrain_and_compress.yaml"]
KFP_TYPES = {"string": "STRING", "number": "NUMBER_DOUBLE", "integer": "NUMBER_INTEGER", "array": "LIST"}
PY_TYPES = {"string": str, "number": float, "integer": int, "array": list}
OTHER_DEVICE = {"name": "edge-4t", "intra_op_threads": 4, "warmup": 5, "iterations": 50}


def _spec_file(tmp_path: Path) -> Path:
    doc = job_doc("s3://models/cnn.pt", "s3://data/animal-mnist/", name="form-job")
    doc["tolerance"] = {"mode": "relative", "max_drop": 0.02}
    doc["search"].update(max_trials=5, rounds=1, parallel_trials=3, max_seconds=600)
    doc["devices"] = [TEST_DEVICE, "x86-edge-2t"]
    doc["target_device"] = "cpu-2t"
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _root_parameters(compiled: Path) -> dict[str, Any]:
    spec = next(yaml.safe_load_all(compiled.read_text()))
    return dict(spec["root"]["inputDefinitions"]["parameters"])


def test_both_doors_offer_the_same_run_form(tmp_path: Path) -> None:
    spec_file = _spec_file(tmp_path)
    airflow_form = run_params(tasks.resolve_spec(spec_file))
    kfp_form = _root_parameters(stamp(spec_file, tmp_path / "stamped.yaml"))
    kfp_form.pop("spec")  # the Kubeflow form also takes the spec itself (a DAG has its spec file)

    assert list(airflow_form) == list(FIELD_NAMES)
    assert set(kfp_form) == set(FIELD_NAMES)
    for f in FIELDS:
        airflow_default = airflow_form[f.name].value
        assert kfp_form[f.name].get("defaultValue") == airflow_default, f.name
        assert kfp_form[f.name]["parameterType"] == KFP_TYPES[f.type], f.name
        assert f.type in airflow_form[f.name].schema["type"], f.name
    # the spec's values, its defaults where it sets none, shipped profiles expanded into objects
    assert airflow_form["max_drop"].value == 0.02 and airflow_form["tolerance_mode"].value == "relative"
    assert airflow_form["rounds"].value == 1 and airflow_form["objective"].value == "latency"
    assert [d["name"] for d in airflow_form["devices"].value] == ["cpu-2t", "x86-edge-2t"]
    # the Airflow form checks the spec's bounds before a run starts
    assert airflow_form["max_drop"].schema["exclusiveMaximum"] == 1.0
    assert airflow_form["tolerance_mode"].schema["enum"] == ["absolute", "relative"]


@pytest.mark.parametrize("compiled", [*CHECKED_IN, "stamped"], ids=lambda p: getattr(p, "name", str(p)))
def test_every_kfp_parameter_has_a_description(compiled: Path | str, tmp_path: Path) -> None:
    path = stamp(_spec_file(tmp_path), tmp_path / "s.yaml") if compiled == "stamped" else Path(compiled)
    params = _root_parameters(path)
    assert set(FIELD_NAMES) | {"spec"} <= set(params)
    undescribed = [name for name, p in params.items() if not p.get("description", "").strip()]
    assert not undescribed
    # what the Kubeflow form cannot check is said in words
    assert "< 1" in params["max_drop"]["description"]
    assert "absolute, relative" in params["tolerance_mode"]["description"]


def test_a_form_value_reaches_the_spec_the_same_way_through_both_doors(tmp_path: Path) -> None:
    spec_file = _spec_file(tmp_path)
    form: dict[str, Any] = {
        "job_name": "form-job-2",
        "max_drop": 0.03,
        "tolerance_mode": "absolute",
        "objective": "size",
        "max_trials": 3,
        "rounds": 2,
        "parallel_trials": 1,
        "max_seconds": 120.0,
        "devices": [OTHER_DEVICE, TEST_DEVICE],
        "target_device": "edge-4t",
        "model_name": "cnn-edge",
        "alias": "staging",
        "data_uri": "",  # unset: the spec's
        "model_uri": None,  # unset: the spec's
    }
    # Airflow: the DAG's resolve_spec task with the run's params
    airflow_spec = SqueezeflowResolveSpecOperator(
        task_id="resolve_spec", spec_source=str(spec_file), aws_conn_id=None
    ).execute({"params": form})  # type: ignore[arg-type]
    # Kubeflow: the ingest step with the pipeline's parameters (the spec pasted as text)
    kfp_spec = steps.resolve_spec_param(spec_file.read_text(), form)

    assert airflow_spec == kfp_spec
    assert kfp_spec["name"] == "form-job-2" and kfp_spec["objective"] == "size"
    assert kfp_spec["tolerance"]["max_drop"] == 0.03 and kfp_spec["tolerance"]["mode"] == "absolute"
    assert kfp_spec["search"]["rounds"] == 2 and kfp_spec["search"]["max_seconds"] == 120.0
    assert kfp_spec["search"]["recipes"], "fields the form does not name stay as the spec has them"
    assert [d["name"] for d in kfp_spec["devices"]] == ["edge-4t", "cpu-2t"]
    assert (kfp_spec["registry"]["model_name"], kfp_spec["registry"]["alias"]) == ("cnn-edge", "staging")
    assert kfp_spec["model"]["uri"] == "s3://models/cnn.pt" and kfp_spec["data"]["uri"].startswith("s3://")
    # a bad value is reported against the spec field it sets, by both doors alike
    with pytest.raises(SpecError, match=r"tolerance\.max_drop"):
        steps.resolve_spec_param(spec_file.read_text(), {"max_drop": 2})
    with pytest.raises(SpecError, match=r"tolerance\.max_drop"):
        tasks.resolve_spec(spec_file, form_overrides({"max_drop": 2}))


def test_a_stamped_form_left_alone_gives_the_stamped_spec(tmp_path: Path) -> None:
    spec_file = _spec_file(tmp_path)
    params = _root_parameters(stamp(spec_file, tmp_path / "stamped.yaml"))
    values = {name: p.get("defaultValue") for name, p in params.items()}
    assert steps.resolve_spec_param(values.pop("spec"), values) == tasks.resolve_spec(spec_file)


def test_the_generic_pipeline_makes_a_job_from_the_form_alone() -> None:
    params = _root_parameters(CHECKED_IN[0])
    assert params["spec"]["defaultValue"] == ""
    assert {n: params[n]["defaultValue"] for n in FIELD_NAMES} == {f.name: unset_value(f) for f in FIELDS}, (
        "the generic form presets nothing: an unset field keeps what a pasted spec says"
    )
    form = {
        "job_name": "from-the-form",
        "model_uri": "s3://models/m.onnx",
        "model_format": "onnx",
        "data_uri": "s3://data/eval/",
        "model_name": "m",
        "max_drop": 0.02,
    }
    unset = {f.name: unset_value(f) for f in FIELDS}
    spec = steps.resolve_spec_param("", {**unset, **form})
    assert spec["name"] == "from-the-form" and spec["model"] == {
        "format": "onnx",
        "uri": "s3://models/m.onnx",
        "factory": None,
        "factory_kwargs": {},
    }
    assert spec["tolerance"]["max_drop"] == 0.02
    registry = spec["registry"]
    assert (registry["model_name"], registry["alias"], registry["history_limit"]) == ("m", "champion", 20), (
        "the spec's defaults fill the rest"
    )
    with pytest.raises(SpecError, match="fill in `model_uri`, `data_uri`"):
        steps.resolve_spec_param("  ", {"job_name": "x", "model_format": "onnx", "model_name": "m"})


def test_kubeflow_components_take_every_form_field() -> None:
    """KFP compiles a component from its source, so `ingest` and `retrain` write the form's fields out."""
    for component in (kfp_components.ingest, kfp_components.retrain):
        signature = inspect.signature(component.python_func)
        for f in FIELDS:
            p = signature.parameters[f.name]
            assert p.default == unset_value(f), (component.name, f.name)
            assert p.annotation is PY_TYPES[f.type], (component.name, f.name)


def test_ingest_outputs_its_record_not_a_timestamp() -> None:
    spec = next(yaml.safe_load_all(CHECKED_IN[0].read_text()))
    outputs = spec["components"]["comp-ingest"]["outputDefinitions"]["parameters"]
    assert outputs["Output"]["parameterType"] == "STRING"
    promote_inputs = spec["components"]["comp-promote"]["inputDefinitions"]["parameters"]
    assert "started" not in promote_inputs, "the start time travels in the dataset handle"


def test_pipeline_outputs_name_the_promoted_model() -> None:
    for compiled in CHECKED_IN:
        spec = next(yaml.safe_load_all(compiled.read_text()))
        outputs = spec["root"]["outputDefinitions"]["parameters"]
        assert set(outputs) == set(Champion._fields)
        assert all(o["description"] for o in outputs.values())
        assert outputs["promoted"]["parameterType"] == "BOOLEAN"
        # each comes from the promote step of whichever branch ran (dsl.OneOf over If/Else)
        wiring = spec["root"]["dag"]["outputs"]["parameters"]
        assert {w["valueFromParameter"]["producerSubtask"] for w in wiring.values()} == {
            t for t in spec["root"]["dag"]["tasks"] if t.startswith("condition-branches-")
        }
        promote = spec["components"]["comp-promote"]["outputDefinitions"]["parameters"]
        assert list(promote) == sorted(steps.CHAMPION_OUTPUTS)
    assert Champion._fields == steps.CHAMPION_OUTPUTS, "the component returns its outputs in this order"

    result = {"promotion": {"promoted": True, "model_name": "cnn", "alias": "prod", "version": "7"}}
    out = steps.champion_outputs(result)
    assert out["model_uri"] == "models:/cnn/7" and out["version"] == "7" and out["promoted"] is True
    assert json.loads(out["result"]) == result
    nothing = steps.champion_outputs({"promotion": {**result["promotion"], "promoted": False}})
    assert (nothing["version"], nothing["model_uri"], nothing["registered_model"]) == ("", "", "cnn")


def test_unset_form_values_change_nothing() -> None:
    assert form_overrides({n: None for n in FIELD_NAMES}) == {}
    assert form_overrides({f.name: unset_value(f) for f in FIELDS}) == {}
    assert form_overrides({"devices": [], "alias": "", "unknown": 3}) == {}
    # -1 is Kubeflow's "empty" for a number; 0 and other values are values (the spec judges them)
    assert form_overrides({"rounds": 0, "max_drop": -0.5}) == {
        "search": {"rounds": 0},
        "tolerance": {"max_drop": -0.5},
    }
    assert form_defaults(None) == dict.fromkeys(FIELD_NAMES)


def test_the_pipelines_readme_lists_every_form_field() -> None:
    readme = (REPO / "pipelines" / "README.md").read_text()
    assert [f.name for f in FIELDS if f"`{f.name}` | `{f.spec_field}`" not in readme] == []
