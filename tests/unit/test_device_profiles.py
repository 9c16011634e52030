"""Device profiles in the job spec: the shipped library, overrides, budgets, the pytorch_eager reference
runtime, and what keys a measurement."""

from __future__ import annotations

from typing import Any

import pytest

from squeezeflow.errors import SpecError
from squeezeflow.spec.devices import DeviceProfile, profile_library
from squeezeflow.spec.load import parse_spec, spec_json_schema


def spec_doc(*devices: Any, model_format: str = "state_dict", **overrides: Any) -> dict[str, Any]:
    model: dict[str, Any] = {"format": model_format, "uri": "/m.pt"}
    if model_format == "state_dict":
        model["factory"] = "squeezeflow.zoo.cnn:tiny_cnn"
    doc: dict[str, Any] = {
        "name": "job",
        "model": model,
        "data": {"uri": "/data"},
        "registry": {"model_name": "m"},
        "devices": list(devices),
    }
    doc.update(overrides)
    return doc


def test_every_shipped_profile_is_valid_and_named_after_its_file() -> None:
    lib = profile_library()
    assert {"x86-edge-2t", "arm-board-4t", "jetson-orin-cuda", "pytorch-eager-2t"} <= set(lib)
    assert all(p.name == name for name, p in lib.items())
    assert lib["jetson-orin-cuda"].execution_provider == "CUDAExecutionProvider"
    assert lib["jetson-orin-cuda"].remote and lib["arm-board-4t"].remote
    assert lib["pytorch-eager-2t"].runtime == "pytorch_eager"


def test_a_spec_can_name_a_shipped_profile_with_a_bare_string() -> None:
    spec = parse_spec(spec_doc("x86-edge-2t"))
    assert spec.devices[0] == profile_library()["x86-edge-2t"].model_copy(update={"profile": "x86-edge-2t"})
    assert spec.target.name == "x86-edge-2t"


def test_fields_given_with_a_library_profile_override_it_and_budgets_merge_field_by_field() -> None:
    lib = {"profile": "x86-edge-2t", "budgets": {"max_size_mb": 5}}
    spec = parse_spec(
        spec_doc(
            {**lib, "name": "edge-b4", "batch_size": 4, "extra_batch_sizes": [], "budgets": {"max_p95_ms": 2}}
        )
    )
    d = spec.devices[0]
    assert (d.name, d.batch_size, d.intra_op_threads) == ("edge-b4", 4, 2)  # threads from the library
    assert d.budgets.max_p95_ms == 2 and d.budgets.max_size_mb is None  # the library sets no budgets
    # A resolved spec dumped and loaded again is the same spec (what orchestrators pass between tasks).
    again = parse_spec(spec.model_dump(mode="json", by_alias=True))
    assert again == spec


def test_an_unknown_library_profile_is_refused_naming_the_field_and_listing_the_shipped_ones() -> None:
    with pytest.raises(SpecError, match=r"devices\.0\.profile: .*no shipped device profile named 'x86-edge'"):
        parse_spec(spec_doc("x86-edge"))
    with pytest.raises(SpecError, match="jetson-orin-cuda"):
        parse_spec(spec_doc({"profile": "jetson"}))


def test_a_gpu_provider_is_valid_in_a_spec_because_it_is_checked_where_it_is_measured() -> None:
    spec = parse_spec(spec_doc({"name": "gpu", "execution_provider": "TensorrtExecutionProvider"}))
    assert spec.devices[0].execution_provider == "TensorrtExecutionProvider"


def test_a_pytorch_eager_profile_cannot_be_the_target_device() -> None:
    ok = parse_spec(spec_doc("x86-edge-2t", "pytorch-eager-2t"))
    assert ok.target.name == "x86-edge-2t"
    with pytest.raises(SpecError, match="target_device is 'pytorch-eager-2t', a pytorch_eager reference"):
        parse_spec(spec_doc("x86-edge-2t", "pytorch-eager-2t", target_device="pytorch-eager-2t"))
    with pytest.raises(SpecError, match=r"target_device \(default: the first device\)"):
        parse_spec(spec_doc("pytorch-eager-2t", "x86-edge-2t"))


def test_a_pytorch_eager_profile_needs_a_pytorch_model() -> None:
    with pytest.raises(
        SpecError, match=r"devices\.1 \('pytorch-eager-2t'\) has runtime 'pytorch_eager'.*'onnx'"
    ):
        parse_spec(spec_doc("x86-edge-2t", "pytorch-eager-2t", model_format="onnx"))


def test_a_pytorch_eager_profile_cannot_name_an_execution_provider() -> None:
    bad = {"name": "ref", "runtime": "pytorch_eager", "execution_provider": "CUDAExecutionProvider"}
    with pytest.raises(SpecError, match=r"devices\.1: .*runtime 'pytorch_eager' runs on the CPU"):
        parse_spec(spec_doc("x86-edge-2t", bad))


def test_extra_batch_sizes_are_distinct_and_do_not_repeat_batch_size() -> None:
    assert DeviceProfile(name="d", batch_size=1, extra_batch_sizes=[8, 32]).batch_sizes == [1, 8, 32]
    with pytest.raises(SpecError, match=r"devices\.0: .*repeats batch_size 8"):
        parse_spec(spec_doc({"name": "d", "batch_size": 8, "extra_batch_sizes": [8]}))
    with pytest.raises(SpecError, match=r"devices\.0\.extra_batch_sizes: .*distinct"):
        parse_spec(spec_doc({"name": "d", "extra_batch_sizes": [4, 4]}))
    with pytest.raises(SpecError, match=r"devices\.0\.extra_batch_sizes\.0"):
        parse_spec(spec_doc({"name": "d", "extra_batch_sizes": [0]}))


def test_input_shape_override_needs_positive_dimensions() -> None:
    assert parse_spec(spec_doc({"name": "d", "input_shape": [1, 56, 56]})).devices[0].input_shape == [
        1,
        56,
        56,
    ]
    with pytest.raises(SpecError, match=r"devices\.0\.input_shape\.1"):
        parse_spec(spec_doc({"name": "d", "input_shape": [1, 0, 28]}))


def test_budgets_must_be_positive_and_are_named_when_misspelt() -> None:
    with pytest.raises(SpecError, match=r"devices\.0\.budgets\.max_p95_ms"):
        parse_spec(spec_doc({"name": "d", "budgets": {"max_p95_ms": 0}}))
    with pytest.raises(SpecError, match=r"devices\.0\.budgets\.max_p99_ms: unknown field"):
        parse_spec(spec_doc({"name": "d", "budgets": {"max_p99_ms": 3}}))


def test_measurement_key_ignores_budgets_remote_settings_and_library_origin_but_not_what_is_measured() -> (
    None
):
    base = DeviceProfile(name="edge", intra_op_threads=2, warmup=50, iterations=300, extra_batch_sizes=[8])
    same = [
        base.model_copy(update={"budgets": {"max_p95_ms": 1.0}}),
        base.model_copy(update={"remote": True, "remote_timeout_s": 10.0}),
        base.model_copy(update={"profile": "x86-edge-2t"}),
    ]
    assert all(p.measurement_json() == base.measurement_json() for p in same)
    different = [
        base.model_copy(update={"input_shape": [1, 32, 32]}),
        base.model_copy(update={"extra_batch_sizes": [16]}),
        base.model_copy(update={"execution_provider": "CUDAExecutionProvider"}),
        base.model_copy(update={"runtime": "pytorch_eager"}),
        base.model_copy(update={"intra_op_threads": 4}),
    ]
    assert all(p.measurement_json() != base.measurement_json() for p in different)


def test_json_schema_accepts_a_profile_name_and_does_not_demand_a_name_with_a_profile() -> None:
    schema = spec_json_schema()
    items = schema["properties"]["devices"]["items"]
    assert {"type": "string"} in items["anyOf"]
    device = schema["$defs"]["DeviceProfile"]
    assert "name" not in device.get("required", [])
    assert {"profile", "budgets", "extra_batch_sizes", "input_shape"} <= set(device["properties"])
    assert "CUDAExecutionProvider" in device["properties"]["execution_provider"]["enum"]
