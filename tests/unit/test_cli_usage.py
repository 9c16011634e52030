"""Usage errors read like any command-line tool's: one line of usage and the error, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import squeezeflow

CLI = str(Path(sys.executable).with_name("squeezeflow"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("run",), "Missing argument"),
        (("passes", "--bogus"), "No such option: --bogus"),
        (("--bogus",), "No such option: --bogus"),
        (("spec", "validate"), "Missing argument"),
    ],
)
def test_a_usage_error_exits_2_with_one_line_of_usage(args: tuple[str, ...], says: str) -> None:
    done = _cli(*args)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert says in out and "Usage: squeezeflow" in out
    assert "Traceback" not in out and len(out.strip().splitlines()) <= 5, out


def test_version_prints_the_installed_version() -> None:
    done = _cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"squeezeflow {squeezeflow.__version__}"
