"""The one rich Console factory of the command-line tools.

Why: rich sizes its output to the terminal, and when stdout is a pipe or a
file (a CI log, `| less`, `> report.txt`) it falls back to 80 columns, so a
nine-column table folds every topic name over three lines and the log is
unreadable. Here a terminal keeps its own width and colours; anything else
gets plain text (no colour codes, no spinner) at a width no report table
reaches, so every row stays on one line. `COLUMNS` still wins when set.
"""

from __future__ import annotations

import os
import sys
from typing import Any

#: Width used when the output is not a terminal: wider than any table the tools print.
PIPE_WIDTH = 400


def is_terminal(stderr: bool = False) -> bool:
    stream = sys.stderr if stderr else sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced stream
        return False


def make_console(*, quiet: bool = False, stderr: bool = False) -> Any:
    """A `rich.console.Console` for reports: the terminal's width and colours, or plain wide text when piped."""
    from rich.console import Console

    if is_terminal(stderr) or os.environ.get("COLUMNS"):
        return Console(quiet=quiet, stderr=stderr)
    return Console(quiet=quiet, stderr=stderr, width=PIPE_WIDTH, color_system=None, force_terminal=False,
                   force_interactive=False, highlight=False, emoji=False)
