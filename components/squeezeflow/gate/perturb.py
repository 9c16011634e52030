"""Perturbed copies of held-out inputs, for the gate's robustness guard.

Compression can keep clean-data accuracy while making a model brittle (quantization noise adds up
with input noise; pruning removes redundancy that absorbed blur). The guard scores baseline and
candidate on the same perturbed samples. Each perturbation is deterministic given its seed.

Image-like inputs are float arrays ``[N, ..., H, W]``; the spatial axes are the last two. Token
inputs are integer arrays ``[N, L]`` of token ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from squeezeflow.errors import SpecError

IMAGE_PERTURBATIONS = ("gaussian_noise", "blur", "brightness")
TOKEN_PERTURBATIONS = ("token_dropout",)


def default_perturbations(x: np.ndarray) -> list[str]:
    return list(TOKEN_PERTURBATIONS if np.issubdtype(x.dtype, np.integer) else IMAGE_PERTURBATIONS)


def check_perturbations(x: np.ndarray, kinds: Sequence[str] | None) -> None:
    """Raise SpecError when one of ``kinds`` cannot apply to inputs like ``x``."""
    for kind in kinds or default_perturbations(x):
        perturb(x[:1], kind, 0.1)


def perturb(x: np.ndarray, kind: str, severity: float, seed: int = 0, pad_token_id: int = 0) -> np.ndarray:
    """A perturbed copy of ``x`` (same shape and dtype).

    - ``gaussian_noise``: additive noise with std ``severity`` x the data range, clipped to the range;
    - ``blur``: Gaussian blur over the last two axes with sigma ``10 x severity`` pixels;
    - ``brightness``: a shift of ``severity`` x the data range, clipped to the range;
    - ``token_dropout``: each token replaced by ``pad_token_id`` with probability ``severity``.
    """
    integer = np.issubdtype(x.dtype, np.integer)
    if kind in IMAGE_PERTURBATIONS and integer:
        raise SpecError(
            f"tolerance.robustness: perturbation {kind!r} needs float (image) inputs, the dataset has "
            f"{x.dtype} inputs; use token_dropout"
        )
    if kind in TOKEN_PERTURBATIONS and not integer:
        raise SpecError(
            f"tolerance.robustness: perturbation {kind!r} needs integer token inputs, the dataset has "
            f"{x.dtype} inputs; use gaussian_noise, blur or brightness"
        )
    rng = np.random.default_rng(seed)
    if kind == "token_dropout":
        drop = rng.random(x.shape) < severity
        return np.where(drop, np.asarray(pad_token_id, dtype=x.dtype), x)
    lo, hi = float(x.min()), float(x.max())
    span = (hi - lo) or 1.0
    xf = x.astype(np.float32, copy=False)
    if kind == "gaussian_noise":
        out = xf + rng.normal(0.0, severity * span, size=x.shape).astype(np.float32)
    elif kind == "brightness":
        out = xf + np.float32(severity * span)
    elif kind == "blur":
        if x.ndim < 3:
            raise SpecError(
                f"tolerance.robustness: blur needs inputs with two spatial axes, got shape {list(x.shape)}"
            )
        from scipy.ndimage import gaussian_filter

        sigma = [0.0] * (x.ndim - 2) + [10.0 * severity] * 2
        out = gaussian_filter(xf, sigma=sigma, mode="nearest")
    else:
        raise SpecError(f"tolerance.robustness: unknown perturbation {kind!r}")
    return np.clip(out, lo, hi).astype(x.dtype, copy=False)
