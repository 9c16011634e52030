#!/usr/bin/env python3
"""Install checkov (the Terraform/Kubernetes static checker) into its own virtual environment.

checkov pins old versions of boto3, packaging and friends, so it must not share the project's `.venv`
(installing it there downgrades boto3 under MLflow and Airflow). This script keeps it in
`.squeezeflow/tools/checkov-venv` and prints the path of its `checkov` executable; it is idempotent (a
stamp file records the pinned version, and a venv that already has it is kept).

    python infra/tools/get_checkov.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO_ROOT / ".squeezeflow" / "tools" / "checkov-venv"
CHECKOV_REQUIREMENT = "checkov==3.3.30"


class CheckovUnavailable(RuntimeError):
    """checkov could not be installed here; the message says why."""


def _bin(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


def ensure_checkov(venv: Path = DEFAULT_VENV) -> Path:
    """The `checkov` executable of a venv holding CHECKOV_REQUIREMENT; raises CheckovUnavailable."""
    stamp = venv / ".squeezeflow-checkov"
    checkov = _bin(venv, "checkov")
    if checkov.is_file() and stamp.is_file() and stamp.read_text().strip() == CHECKOV_REQUIREMENT:
        return checkov
    shutil.rmtree(venv, ignore_errors=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(_bin(venv, "python")), "-m", "pip", "install", "--quiet", CHECKOV_REQUIREMENT],
    ]
    for cmd in steps:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, check=False)
        if out.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise CheckovUnavailable(f"{' '.join(cmd[-3:])} failed: {(out.stderr or out.stdout)[-1500:]}")
    version = subprocess.run([str(checkov), "--version"], capture_output=True, text=True, timeout=120)
    if version.returncode != 0:
        raise CheckovUnavailable(f"checkov --version failed: {version.stderr[-1000:]}")
    stamp.write_text(CHECKOV_REQUIREMENT + "\n")
    return checkov


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install checkov into its own venv; print its path.")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    args = parser.parse_args(argv)
    try:
        print(ensure_checkov(args.venv))
    except CheckovUnavailable as exc:
        print(f"get_checkov: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
