"""The gate's part of the job spec: how much of the primary metric a candidate may lose (`Tolerance`),
and the secondary guards on perturbed inputs (`RobustnessCheck`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from squeezeflow.spec.base import StrictModel

Perturbation = Literal["gaussian_noise", "blur", "brightness", "token_dropout"]


class RobustnessCheck(StrictModel):
    """Secondary guard: the candidate must keep the primary metric on perturbed held-out inputs too,
    so a model that is only accurate on clean data does not pass. Baseline and candidate see the
    same perturbed samples; the guard fails when, for any perturbation, the candidate's metric falls
    more than ``max_drop`` (absolute) below the baseline's on that perturbation."""

    perturbations: list[Perturbation] | None = Field(
        default=None,
        min_length=1,
        description="Omitted: gaussian_noise, blur and brightness for float (image) inputs; token_dropout "
        "for integer (token id) inputs.",
    )
    severity: float = Field(
        default=0.1,
        gt=0.0,
        le=1.0,
        description="Strength: noise std and brightness shift as a fraction of the input range, blur sigma "
        "in pixels x 10, the fraction of tokens dropped.",
    )
    max_drop: float = Field(default=0.02, ge=0.0, lt=1.0)
    samples: int = Field(
        default=1000, ge=50, le=1_000_000, description="Held-out samples perturbed (the first N, seeded)."
    )
    pad_token_id: int = Field(default=0, ge=0, description="What token_dropout writes in place of a token.")


class Tolerance(StrictModel):
    """How much of the primary metric a candidate may lose against the baseline."""

    mode: Literal["absolute", "relative"] = Field(
        default="absolute",
        description="absolute: max_drop in metric units (0.01 = one point of accuracy); "
        "relative: max_drop as a fraction of the baseline metric.",
    )
    max_drop: float = Field(default=0.01, ge=0.0, lt=1.0)
    method: Literal["bootstrap", "point"] = Field(
        default="bootstrap",
        description="bootstrap: gate on the upper confidence bound of the drop (paired bootstrap over the "
        "held-out predictions); point: gate on the measured drop alone.",
    )
    confidence: float = Field(
        default=0.95, ge=0.5, le=0.999, description="One-sided confidence of the bound."
    )
    bootstrap_samples: int = Field(default=2000, ge=200, le=100_000)
    max_class_recall_drop: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Secondary guard: fail a candidate when the recall of any single class on the held-out "
        "split drops by more than this (absolute), even if the primary metric holds. None: the worst "
        "class's drop is reported, not enforced.",
    )
    min_agreement: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Secondary guard: fail a candidate whose top-1 predictions agree with the baseline's on "
        "less than this fraction of the held-out samples (a model can keep its accuracy while changing "
        "which samples it gets right). None: agreement is reported, not enforced.",
    )
    robustness: RobustnessCheck | None = Field(
        default=None, description="Secondary guard on perturbed held-out inputs. None: not checked."
    )
    min_device_agreement: float = Field(
        default=0.99,
        ge=0.0,
        le=1.0,
        description="For profiles with `evaluate_on_device`: the fraction of held-out samples on which the "
        "device's top-1 answers must equal this machine's for the candidate to pass.",
    )

    def allowed_drop(self, baseline_metric: float) -> float:
        return self.max_drop if self.mode == "absolute" else self.max_drop * baseline_metric
