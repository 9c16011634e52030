"""Kubeflow Pipelines support: components (:mod:`.components`), pipelines (:mod:`.pipelines`) and the
``squeezeflow kfp`` commands (:mod:`.cli`). Needs the ``kfp`` extra (``pip install 'squeezeflow[kfp]'``).

Every component runs in :data:`IMAGE`, built from the repository's ``Dockerfile``.
"""

from __future__ import annotations

#: The image every component runs in: ``docker build -t ghcr.io/squeezeflow/squeezeflow:0.1.0 .``.
#: Its tag is the package version; a platform that mirrors it elsewhere recompiles with ``--image``.
IMAGE = "ghcr.io/squeezeflow/squeezeflow:0.1.0"

__all__ = ["IMAGE"]
