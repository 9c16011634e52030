"""What the libraries we call write to a user's console, kept to what the user can act on.

Each function here quiets one known message or one known print of a third-party library, nothing
wider: a real warning from the same library still reaches the user.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator

# torch's ONNX exporter warns, on every export, that it skips the torchvision operators (nms,
# roi_align, ...) when torchvision is not installed: squeezeflow never needs them. The graph passes it
# runs (onnxscript, onnx_ir) log each step at INFO ("Removed 83 unused nodes", ...).
_TORCH_REGISTRATION = "torch.onnx._internal.exporter._registration"
_TORCHVISION_SKIPPED = "torchvision is not installed"
_EXPORT_PASSES = ("onnxscript", "onnx_ir")

# Great Expectations logs at INFO: which of its functions it does not register as public API (about
# 230 lines, on import), its metric registry, its ephemeral docs site's temporary directory. Its base
# module sets its own logger to INFO on import, overriding whatever the application chose.
_GX = "great_expectations"
_GX_BASE = "great_expectations.data_context.types.base"


class _DropTorchvisionSkipped(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TORCHVISION_SKIPPED)


_drop_torchvision_skipped = _DropTorchvisionSkipped()


@contextlib.contextmanager
def quiet_onnx_export() -> Iterator[None]:
    """Around ``torch.onnx.export``: drop the exporter's "torchvision is not installed" warnings (every
    other warning of its operator registry still shows), and log its graph passes' steps only at
    WARNING or above unless the application set their loggers' levels."""
    registration = logging.getLogger(_TORCH_REGISTRATION)
    registration.addFilter(_drop_torchvision_skipped)
    passes = [logging.getLogger(name) for name in _EXPORT_PASSES]
    quieted = [logger for logger in passes if logger.level == logging.NOTSET]
    for logger in quieted:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        registration.removeFilter(_drop_torchvision_skipped)
        for logger in quieted:
            logger.setLevel(logging.NOTSET)


def quiet_great_expectations() -> None:
    """Great Expectations logs warnings and errors only (unless the application set its level); call it
    before *and* after importing ``great_expectations`` (the import itself logs, and sets one of its
    loggers back to INFO)."""
    gx = logging.getLogger(_GX)
    if gx.level == logging.NOTSET:
        gx.setLevel(logging.WARNING)
    logging.getLogger(_GX_BASE).setLevel(logging.NOTSET)  # inherit, as every other GX logger does


@contextlib.contextmanager
def prints_to_debug_log(log: logging.Logger, what: str) -> Iterator[None]:
    """Send what a library ``print``\\ s to stdout inside the block to ``log`` at DEBUG level: there
    for whoever logs at DEBUG, out of the user's output (and of Airflow's task logs) otherwise."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        if printed.getvalue().strip():
            log.debug("%s printed:\n%s", what, printed.getvalue().rstrip())


_ORT_QUANTIZATION = os.path.join("onnxruntime", "quantization")


class _OrtQuantizerToDebug(logging.Filter):
    """ONNX Runtime's quantizer logs its progress through the root logger at INFO ("Quantization
    parameters for tensor ... not specified", one line per tensor): drop it there, keep it at DEBUG."""

    def __init__(self, log: logging.Logger) -> None:
        super().__init__()
        self.log = log

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or _ORT_QUANTIZATION not in record.pathname:
            return True
        self.log.debug("ONNX Runtime: %s", record.getMessage())
        return False


@contextlib.contextmanager
def onnxruntime_quantizer_to_debug_log(log: logging.Logger) -> Iterator[None]:
    """Around an ONNX Runtime quantization call: what it prints to stdout and what it logs at INFO or
    below go to ``log`` at DEBUG level; its warnings and errors still show."""
    root = logging.getLogger()
    to_debug = _OrtQuantizerToDebug(log)
    root.addFilter(to_debug)
    try:
        with prints_to_debug_log(log, "ONNX Runtime's quantizer"):
            yield
    finally:
        root.removeFilter(to_debug)
