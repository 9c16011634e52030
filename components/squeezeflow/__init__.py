"""squeezeflow: automated model optimization with an accuracy gate and registry promotion."""

from importlib.metadata import PackageNotFoundError, version

try:  # the one place the version is written is pyproject.toml
    __version__ = version("squeezeflow")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

#: The image the Kubeflow components and Airflow's pod mode run in (the repository's ``Dockerfile``),
#: tagged with the package version; a platform that mirrors it elsewhere passes its own.
IMAGE = f"ghcr.io/squeezeflow/squeezeflow:{__version__}"

__all__ = ["IMAGE", "__version__"]
