"""The version is written once (pyproject.toml): the package, the image tag and the chart's appVersion
follow it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

import squeezeflow

REPO = Path(__file__).resolve().parents[2]


def test_the_package_the_image_and_the_chart_carry_the_version_of_pyproject() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert squeezeflow.__version__ == version
    assert squeezeflow.IMAGE.endswith(f":{version}")
    chart = yaml.safe_load((REPO / "charts" / "squeezeflow" / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
