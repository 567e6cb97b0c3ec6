"""Rich rendering of the app layer's progress events (presentation lives in the CLI)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from nightowl.app.events import (
    EpisodeDone,
    Event,
    Message,
    PhaseAdvanced,
    PhaseNote,
    PhaseStarted,
)


class RichProgress:
    """A `ProgressSink` that draws one bar per phase and prints messages above them."""

    def __init__(self, progress: Progress, *, episode_lines: bool = False) -> None:
        self.progress = progress
        self.episode_lines = episode_lines
        self._ids: dict[str, Any] = {}
        #: reasons of the episodes that ended on an infrastructure error (exit code 1)
        self.errors: list[str] = []

    def __call__(self, event: Event) -> None:
        """Render one event."""
        p = self.progress
        if isinstance(event, PhaseStarted):
            self._ids[event.key] = p.add_task(event.label, total=event.total, extra="")
        elif isinstance(event, PhaseAdvanced):
            if event.key in self._ids:
                p.update(self._ids[event.key], advance=event.advance, extra=event.note)
        elif isinstance(event, PhaseNote):
            if event.key in self._ids:
                p.update(self._ids[event.key], extra=event.note)
        elif isinstance(event, EpisodeDone):
            if event.key in self._ids:
                p.update(self._ids[event.key], advance=1, extra=f"won {event.wins}")
            if event.error:
                self.errors.append(event.error)
                p.console.print(f"  {event.task_id}: error, not a loss ({event.error})")
            elif self.episode_lines:
                outcome = "won" if event.success else "lost"
                p.console.print(
                    f"  {event.task_id}: {outcome} in {event.steps} steps ({event.reason})"
                )
        elif isinstance(event, Message):
            p.console.print(event.text)


@contextmanager
def rich_progress(console: Console, *, episode_lines: bool = False) -> Iterator[RichProgress]:
    """A live progress display for the duration of the block."""
    columns = (
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[extra]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        yield RichProgress(progress, episode_lines=episode_lines)
