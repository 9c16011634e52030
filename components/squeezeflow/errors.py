"""Exception types. Each says what was wrong, where, and what to do; the CLI maps them to exit codes."""

from __future__ import annotations


class SqueezeflowError(Exception):
    """Base class of every error squeezeflow raises on purpose."""

    exit_code = 3


class InvalidInputError(SqueezeflowError):
    """The user's input (job spec, model, dataset) is wrong. Exit code 2."""

    exit_code = 2


class SpecError(InvalidInputError):
    """The job spec is invalid."""


class ModelLoadError(InvalidInputError):
    """The model source cannot be read, is corrupt, or is of an unsupported kind."""


class DataValidationError(InvalidInputError):
    """The dataset is malformed or failed validation.

    ``report_uri`` points at the saved validation report when there is one.
    """

    def __init__(self, message: str, report_uri: str | None = None) -> None:
        super().__init__(message if report_uri is None else f"{message} (report: {report_uri})")
        self.report_uri = report_uri


class DeviceUnavailableError(InvalidInputError):
    """A device profile cannot be measured on this machine (for example its ONNX Runtime execution
    provider is not in this ONNX Runtime build). Exit code 2: the profile, not the service, is what to
    change: mark it ``remote: true`` and measure it on the device, or install the runtime it needs.
    squeezeflow never measures such a profile on another provider instead."""


class IntegrityError(InvalidInputError):
    """An artifact's bytes do not match the content hash they were recorded with."""


class InfrastructureError(SqueezeflowError):
    """A service (MLflow, S3) was unreachable or failed after retries. Exit code 3."""

    exit_code = 3


class PassError(SqueezeflowError):
    """An optimization pass could not be applied to this model (for example an unsupported layer)."""

    def __init__(self, pass_name: str, message: str) -> None:
        super().__init__(f"pass {pass_name!r}: {message}")
        self.pass_name = pass_name


class TrialAbandoned(PassError):
    """A pass gave the candidate up on purpose: its recovery training could not bring it back within the
    gate's tolerance (``search.abandon``). ``seconds_saved``: the training it did not spend."""

    def __init__(self, pass_name: str, message: str, seconds_saved: float) -> None:
        super().__init__(pass_name, message)
        self.reason = message
        self.seconds_saved = seconds_saved


class PromotionRefused(SqueezeflowError):
    """Promotion was refused for a specific candidate (missing or mismatching gate evidence)."""

    exit_code = 1
