"""One-line errors for the command line: what was wrong, what was expected, no traceback."""

from __future__ import annotations

import sys

import typer

USAGE = 2  # bad options or arguments
RUNTIME = 1  # the run itself failed (data, encoder, services)


def fail(message: str, code: int = RUNTIME) -> typer.Exit:
    """Print ``error: message`` on stderr; return the Exit to raise."""
    first_line = " ".join(str(message).split())
    print(f"error: {first_line}", file=sys.stderr)
    return typer.Exit(code)
