"""What the libraries we call write to a user's console, kept to what the user can act on.

Each function here quiets one known message or one known print of a third-party library, nothing
wider: a real warning from the same library still reaches the user.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

# torch's ONNX exporter warns, on every export, that it skips the torchvision operators (nms,
# roi_align, ...) when torchvision is not installed: squeezeflow never needs them.
_TORCH_REGISTRATION = "torch.onnx._internal.exporter._registration"
_TORCHVISION_SKIPPED = "torchvision is not installed"

# Great Expectations logs at INFO, whatever its parent logger's level: which of its functions it does
# not register as public API (about 230 lines, on import), and the temporary directory of its
# ephemeral docs site (its base module sets its own logger to INFO on import, overriding ours).
_GX_CHATTY = ("great_expectations._docs_decorators", "great_expectations.data_context.types.base")


class _DropTorchvisionSkipped(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TORCHVISION_SKIPPED)


_drop_torchvision_skipped = _DropTorchvisionSkipped()


@contextlib.contextmanager
def torchvision_ops_unmentioned() -> Iterator[None]:
    """Around ``torch.onnx.export``: drop the exporter's "torchvision is not installed" warnings (every
    other warning of its operator registry still shows)."""
    registration = logging.getLogger(_TORCH_REGISTRATION)
    registration.addFilter(_drop_torchvision_skipped)
    try:
        yield
    finally:
        registration.removeFilter(_drop_torchvision_skipped)


def quiet_great_expectations() -> None:
    """Keep Great Expectations' INFO chatter out of the log; call it before *and* after importing
    ``great_expectations`` (the import itself logs, and resets one of these levels)."""
    for name in _GX_CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def prints_to_debug_log(log: logging.Logger, what: str) -> Iterator[None]:
    """Send what a library ``print``\\ s to stdout inside the block to ``log`` at DEBUG level, so that
    it is there with ``--verbose`` debugging and stays out of the user's output (and of Airflow's
    task logs) otherwise."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        if printed.getvalue().strip():
            log.debug("%s printed:\n%s", what, printed.getvalue().rstrip())
