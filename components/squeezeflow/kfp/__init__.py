"""Kubeflow Pipelines support: components (:mod:`.components`), pipelines (:mod:`.pipelines`) and the
``squeezeflow kfp`` commands (:mod:`.cli`). Needs the ``kfp`` extra (``pip install 'squeezeflow[kfp]'``).

Every component runs in :data:`IMAGE`, built from the repository's ``Dockerfile``.
"""

from __future__ import annotations

from squeezeflow import IMAGE

#: ``IMAGE``: every component runs in ``ghcr.io/squeezeflow/squeezeflow:<package version>``
#: (``docker build -t ghcr.io/squeezeflow/squeezeflow:<version> .``); a platform that mirrors it
#: elsewhere recompiles with ``--image``.

__all__ = ["IMAGE"]
