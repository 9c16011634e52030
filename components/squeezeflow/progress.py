"""Progress bars that are drawn only where someone watches them.

Off a terminal (output to a file, a pipe, an Airflow or Kubeflow task log) a rich progress bar cannot
redraw itself: it prints its last frame when it stops, so a 20-epoch training left 20 finished bars in
one block. There the loops log a line per epoch or stage instead, and the bar is not drawn at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress, ProgressColumn


def terminal_progress(
    *columns: ProgressColumn | str, enabled: bool = True, stderr: bool = False, transient: bool = False
) -> Progress:
    """A rich ``Progress`` (default columns unless given), disabled unless ``enabled`` and its console
    (stdout, or stderr) is an interactive terminal. Rich's ``TTY_INTERACTIVE`` environment variable
    (1 or 0) decides where it guesses wrong."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=stderr)
    return Progress(
        *columns, console=console, transient=transient, disable=not (enabled and console.is_interactive)
    )
