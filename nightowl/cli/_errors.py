"""One-line errors for CLI commands (shared by the sub-apps)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import typer

from nightowl.errors import NightowlError, UserError


def exit_on_errors(errors: Sequence[str]) -> None:
    """End a command whose episodes had infrastructure errors: one line on stderr, exit 1.

    ``errors`` holds each failed episode's reason (environment or model backend); nothing
    happens when it is empty.
    """
    if not errors:
        return
    counts = Counter(errors)
    reason, _ = counts.most_common(1)[0]
    more = f"; {len(counts) - 1} other reason(s), see nightowl report" if len(counts) > 1 else ""
    typer.secho(
        f"error: {len(errors)} episode(s) ended on an infrastructure error, not counted as "
        f"losses ({reason}){more}", fg=typer.colors.RED, err=True,
    )
    raise typer.Exit(1)


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
