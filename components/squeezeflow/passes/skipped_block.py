"""The stand-in for a block that depth pruning dropped (kept apart from ``depth`` so importing the passes
does not import torch; a pruned model pickled whole finds the class here)."""

from __future__ import annotations

from typing import Any

from torch import nn


class SkippedBlock(nn.Module):
    """A dropped block: returns its first input; extra inputs (an attention mask...) are ignored.

    ``nn.Identity`` takes exactly one input, so it cannot stand in for a transformer layer called with
    its hidden states and a mask."""

    def __init__(self, dropped: str = "") -> None:
        super().__init__()
        self.dropped = dropped

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The block's first input, unchanged."""
        if args:
            return args[0]
        return next(iter(kwargs.values()))

    def extra_repr(self) -> str:
        return f"dropped={self.dropped!r}"
