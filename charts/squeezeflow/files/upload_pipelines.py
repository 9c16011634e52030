"""Upload every compiled pipeline package in a directory to Kubeflow Pipelines (run by the chart's Job).

A pipeline that does not exist yet is created; one that exists gets a new version named
`<pipeline>-<suffix>` (the chart version by default). A version that already exists is left alone, so
re-running the hook (helm upgrade without changes) is harmless.

Environment: KFP_HOST, KFP_NAMESPACE (optional), KFP_TOKEN_PATH (optional, a projected service account
token for multi-user KFP), PIPELINES_DIR, VERSION_SUFFIX.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def pipeline_name(package: Path) -> str:
    return package.stem.replace("_", "-")


def make_client() -> Any:
    import kfp

    token_path = os.environ.get("KFP_TOKEN_PATH", "")
    credentials = None
    if token_path:
        from kfp.client import ServiceAccountTokenVolumeCredentials

        credentials = ServiceAccountTokenVolumeCredentials(path=token_path)
    kwargs: dict[str, Any] = {"host": os.environ["KFP_HOST"], "credentials": credentials}
    if os.environ.get("KFP_NAMESPACE"):
        kwargs["namespace"] = os.environ["KFP_NAMESPACE"]
    return kfp.Client(**kwargs)


def upload_all(client: Any, directory: Path, suffix: str) -> list[str]:
    """Upload the packages; returns one line per package saying what happened."""
    done: list[str] = []
    packages = sorted(directory.glob("*.yaml"))
    if not packages:
        raise SystemExit(f"no compiled pipelines (*.yaml) in {directory}")
    for package in packages:
        name = pipeline_name(package)
        pipeline_id = client.get_pipeline_id(name)
        if pipeline_id is None:
            client.upload_pipeline(pipeline_package_path=str(package), pipeline_name=name)
            done.append(f"created pipeline {name}")
            continue
        version = f"{name}-{suffix}"
        try:
            client.upload_pipeline_version(
                pipeline_package_path=str(package), pipeline_version_name=version, pipeline_id=pipeline_id
            )
        except Exception as exc:  # the API answers 409 (ALREADY_EXISTS) for a version name in use
            if "already exist" not in str(exc).lower() and "409" not in str(exc):
                raise
            done.append(f"kept {name} version {version} (already uploaded)")
            continue
        done.append(f"uploaded {name} version {version}")
    return done


def main() -> int:
    directory = Path(os.environ.get("PIPELINES_DIR", "/pipelines"))
    suffix = os.environ.get("VERSION_SUFFIX", "") or "manual"
    for line in upload_all(make_client(), directory, suffix):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
