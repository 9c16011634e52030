"""squeezeflow: automated model optimization with an accuracy gate and registry promotion."""

__version__ = "0.1.0"
