"""Reference models (``squeezeflow.zoo.cnn``) and a reproducible trainer (``squeezeflow.zoo.train``).

Each factory in :mod:`squeezeflow.zoo.cnn` can be named as a ``module:callable`` model factory, e.g.
``squeezeflow.zoo.cnn:small_resnet``.
"""

from squeezeflow.zoo.cnn import FACTORIES, resnet18_style, small_resnet, tiny_cnn

__all__ = ["FACTORIES", "resnet18_style", "small_resnet", "tiny_cnn"]
