"""One-line errors for CLI commands (shared by the sub-apps)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from nightowl.errors import NightowlError, UserError


@contextmanager
def one_line_errors() -> Iterator[None]:
    """User mistakes exit 2, run failures exit 1; both as one line, no traceback."""
    try:
        yield
    except UserError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    except NightowlError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
