"""A spec's YAML text is read strictly by every front door: a key written twice is refused (it silently
loosened the gate: the last ``max_drop`` won), and a small document that expands into a huge one
through YAML aliases is refused before anything copies it (a 954-byte anchor bomb took 5.8 GB)."""

from __future__ import annotations

import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from squeezeflow.errors import SpecError
from squeezeflow.spec.document import MAX_SPEC_BYTES, read_spec_text
from squeezeflow.spec.load import load_spec
from tests.reference import job_doc

SQUEEZEFLOW = str(Path(sys.executable).with_name("squeezeflow"))


def _spec_text(tmp: Path) -> str:
    """A valid spec's text (its model and data paths exist)."""
    model, data = tmp / "tiny_cnn.pt", tmp / "data"
    model.write_bytes(b"")
    data.mkdir(exist_ok=True)
    return yaml.safe_dump(job_doc(model, data, name="dup-keys"), sort_keys=False)


def _with_second_max_drop(text: str) -> tuple[str, int, int]:
    """The text with ``max_drop: 0.5`` written again in ``tolerance``; the two keys' line numbers."""
    lines = text.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.strip().startswith("max_drop:"))
    lines.insert(first + 1, "  max_drop: 0.5")
    return "\n".join(lines) + "\n", first + 1, first + 2


DUPLICATE = r"duplicate key 'max_drop' \(lines {a} and {b}\): a key may appear once in a mapping"


def _door_spec_validate(path: Path) -> str:
    proc = subprocess.run([SQUEEZEFLOW, "spec", "validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    return " ".join(proc.stderr.split())


def _door_load_spec(path: Path) -> str:
    with pytest.raises(SpecError) as err:
        load_spec(path)
    return str(err.value)


def _door_airflow_factory(path: Path) -> str:
    from squeezeflow.airflow.factory import compress_dag

    with pytest.raises(SpecError) as err:
        compress_dag(path)
    return str(err.value)


def _door_kfp_template(path: Path) -> str:
    from squeezeflow.kfp.pipelines import stamp

    with pytest.raises(SpecError) as err:
        stamp(path, path.with_suffix(".pipeline.yaml"))
    return str(err.value)


def _door_kfp_spec_parameter(path: Path) -> str:
    from squeezeflow.kfp.steps import resolve_spec_param

    with pytest.raises(SpecError) as err:
        resolve_spec_param(path.read_text(), {})
    return str(err.value)


DOORS: dict[str, Callable[[Path], str]] = {
    "spec-validate": _door_spec_validate,
    "load-spec": _door_load_spec,
    "airflow-factory": _door_airflow_factory,
    "kfp-template": _door_kfp_template,
    "kfp-spec-parameter": _door_kfp_spec_parameter,
}


@pytest.mark.parametrize("door", list(DOORS))
def test_every_front_door_refuses_a_key_written_twice_naming_it_and_both_lines(
    door: str, tmp_path: Path
) -> None:
    text, first, second = _with_second_max_drop(_spec_text(tmp_path))
    path = tmp_path / "job.yaml"
    path.write_text(text)
    message = DOORS[door](path)
    assert re.search(DUPLICATE.format(a=first, b=second), message), message


def test_a_merge_key_may_still_be_overridden() -> None:
    doc = read_spec_text("base: &b {x: 1, y: 2}\nmine:\n  <<: *b\n  y: 3\n", "merge.yaml")
    assert doc["mine"] == {"x": 1, "y": 3}


def test_duplicates_are_found_in_nested_and_flow_mappings() -> None:
    with pytest.raises(SpecError, match=r"duplicate key 'a' \(lines 2 and 2\)"):
        read_spec_text("outer:\n  inner: {a: 1, a: 2}\n", "flow.yaml")


def _anchor_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + f"\nbomb: *a{levels - 1}\n"


def test_an_anchor_bomb_is_refused_quickly_and_without_expanding_it(tmp_path: Path) -> None:
    text = _anchor_bomb()
    assert len(text) < 1200  # 9**9 = 387 million values when expanded
    doc = job_doc(tmp_path / "tiny_cnn.pt", tmp_path, name="bomb")
    body = yaml.safe_dump(doc, sort_keys=False).replace(
        "  factory: squeezeflow.zoo.cnn:tiny_cnn",
        "  factory: squeezeflow.zoo.cnn:tiny_cnn\n  factory_kwargs: {bomb: *a8}",
    )
    path = tmp_path / "job.yaml"
    path.write_text(text.rsplit("bomb:", 1)[0] + body)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    with pytest.raises(SpecError, match=r"expands to more than 100,000 values once its YAML aliases"):
        load_spec(path)
    assert time.monotonic() - t0 < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


def test_modest_aliases_are_still_allowed() -> None:
    doc: Any = read_spec_text("d: &d {threads: 2}\nuse: [*d, *d]\n", "ok.yaml")
    assert doc["use"] == [{"threads": 2}, {"threads": 2}]


def test_a_spec_larger_than_any_real_spec_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("name: x\n# " + "x" * MAX_SPEC_BYTES + "\n")
    with pytest.raises(SpecError, match=r"huge\.yaml: it is [\d,]+ bytes; a spec is at most 1,048,576 bytes"):
        load_spec(path)
