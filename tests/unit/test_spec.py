"""The job spec: what is accepted, what is refused, and how refusals read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from squeezeflow.cli import app
from squeezeflow.errors import SpecError
from squeezeflow.spec.load import load_spec, parse_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "animal_mnist" / "job.yaml"


def minimal(**overrides: object) -> dict:
    doc: dict = {
        "name": "job",
        "model": {"format": "onnx", "uri": "/m.onnx"},
        "data": {"uri": "/data"},
        "registry": {"model_name": "m"},
    }
    doc.update(overrides)
    return doc


def test_example_spec_loads_with_relative_paths_resolved_against_the_spec_file() -> None:
    spec = load_spec(EXAMPLE)
    assert spec.name == "animal-mnist-wide-resnet"
    assert Path(spec.model.uri).is_absolute()
    assert spec.model.uri.endswith(".squeezeflow/demo/models/wide_resnet.pt")
    assert spec.target.name == "local-cpu-2t"


def test_a_spec_reached_through_a_link_resolves_its_paths_beside_the_link() -> None:
    # examples/animal_mnist/job.yaml links to the copy inside the package (what `make demo` reads).
    assert EXAMPLE.is_symlink()
    repo = EXAMPLE.parents[2]
    assert Path(load_spec(EXAMPLE).model.uri).is_relative_to(repo / ".squeezeflow" / "demo")


def test_minimal_spec_fills_defaults() -> None:
    spec = parse_spec(minimal())
    assert spec.tolerance.mode == "absolute" and spec.tolerance.max_drop == 0.01
    assert spec.devices[0].name == "local-cpu"
    assert spec.registry.alias == "champion"


def test_unknown_field_is_refused_and_named() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(minimal(tolerence={"max_drop": 0.01}))
    assert "tolerence" in str(err.value) and "unknown field" in str(err.value)


def test_nested_unknown_field_names_its_path() -> None:
    with pytest.raises(SpecError, match=r"model\.weights"):
        parse_spec(minimal(model={"format": "onnx", "uri": "/m.onnx", "weights": "x"}))


def test_state_dict_without_factory_is_refused() -> None:
    with pytest.raises(SpecError, match="factory"):
        parse_spec(minimal(model={"format": "state_dict", "uri": "/m.pt"}))


def test_factory_must_be_module_colon_callable() -> None:
    with pytest.raises(SpecError, match=r"package\.module:callable"):
        parse_spec(minimal(model={"format": "state_dict", "uri": "/m.pt", "factory": "not a ref"}))


@pytest.mark.parametrize("drop", [-0.1, 1.0, 5])
def test_tolerance_outside_zero_to_one_is_refused(drop: float) -> None:
    with pytest.raises(SpecError, match=r"tolerance\.max_drop"):
        parse_spec(minimal(tolerance={"max_drop": drop}))


def test_relative_tolerance_scales_with_the_baseline() -> None:
    spec = parse_spec(minimal(tolerance={"mode": "relative", "max_drop": 0.02}))
    assert spec.tolerance.allowed_drop(0.5) == pytest.approx(0.01)


def test_unknown_target_device_is_refused() -> None:
    with pytest.raises(SpecError, match="target_device"):
        parse_spec(minimal(target_device="jetson"))


def test_unknown_execution_provider_is_refused_and_named() -> None:
    # Known providers (CUDA, TensorRT...) are valid in a spec and checked where they are measured
    # (tests/unit/test_device_profiles.py); a misspelt one is refused here.
    with pytest.raises(SpecError, match=r"devices\.0\.execution_provider"):
        parse_spec(minimal(devices=[{"name": "gpu", "execution_provider": "CudaProvider"}]))


def test_unknown_metric_is_refused_with_the_allowed_ones() -> None:
    with pytest.raises(SpecError, match="top1_accuracy"):
        parse_spec(minimal(task={"metric": "bleu"}))


def test_recipe_with_unknown_pass_is_refused() -> None:
    with pytest.raises(SpecError, match="unknown pass 'magic'"):
        parse_spec(minimal(search={"recipes": [{"steps": [{"name": "magic"}]}]}))


def test_recipe_with_invalid_pass_params_is_refused() -> None:
    bad = {"recipes": [{"steps": [{"name": "ort_static_int8", "params": {"activation_type": "int4"}}]}]}
    with pytest.raises(SpecError, match="activation_type"):
        parse_spec(minimal(search=bad))


def test_reserved_alias_is_refused() -> None:
    with pytest.raises(SpecError, match="reserved"):
        parse_spec(minimal(registry={"model_name": "m", "alias": "latest"}))


def test_the_registry_description_and_history_limit_do_not_change_what_the_job_computes() -> None:
    """They change how the registry shows and keeps a result: the job's key (the spec digest) and so its
    records stay the same, and a spec written before they existed keeps its key."""
    plain = parse_spec(minimal())
    told = parse_spec(
        minimal(registry={"model_name": "m", "description": "Kiosk classifier.", "history_limit": 5})
    )
    assert (told.registry.description, told.registry.history_limit) == ("Kiosk classifier.", 5)
    assert (plain.registry.description, plain.registry.history_limit) == (None, 20)
    assert told.digest() == plain.digest()
    assert parse_spec(minimal(registry={"model_name": "m", "alias": "prod"})).digest() != plain.digest()


@pytest.mark.parametrize("limit", [0, 101])
def test_a_history_limit_outside_one_to_a_hundred_is_refused_and_named(limit: int) -> None:
    with pytest.raises(SpecError, match=r"registry\.history_limit"):
        parse_spec(minimal(registry={"model_name": "m", "history_limit": limit}))


def test_recipe_key_ignores_its_name_but_not_its_params() -> None:
    a = parse_spec(minimal(search={"recipes": [{"name": "a", "steps": [{"name": "ort_dynamic_int8"}]}]}))
    b = parse_spec(minimal(search={"recipes": [{"name": "b", "steps": [{"name": "ort_dynamic_int8"}]}]}))
    c = parse_spec(
        minimal(
            search={"recipes": [{"steps": [{"name": "ort_dynamic_int8", "params": {"per_channel": True}}]}]}
        )
    )
    ka, kb, kc = (s.search.recipes[0].key() for s in (a, b, c))  # type: ignore[index]
    assert ka == kb != kc


def test_invalid_yaml_is_a_spec_error(tmp_path: Path) -> None:
    p = tmp_path / "job.yaml"
    p.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(p)


def test_schema_command_prints_the_json_schema() -> None:
    res = CliRunner().invoke(app, ["spec", "schema"])
    assert res.exit_code == 0
    schema = json.loads(res.output)
    assert {"model", "data", "tolerance", "devices", "registry"} <= set(schema["properties"])
    registry = schema["$defs"]["RegistryTarget"]["properties"]
    assert {"model_name", "alias", "description", "history_limit"} <= set(registry)
    assert "name" in schema["required"]
