"""Progress events: how long-running use cases report what they are doing.

Library code never draws anything. A use case takes an optional `ProgressSink` (any
callable taking one event) and tells it when a phase starts, advances or finishes; the
CLI turns these into rich progress bars, a worker into log lines, a test into a list
(``progress=events.append``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class PhaseStarted:
    """A phase with ``total`` units of work began (``key`` identifies it)."""

    key: str
    label: str
    total: int


@dataclass(frozen=True, kw_only=True)
class PhaseAdvanced:
    """``advance`` more units of a phase are done; ``note`` is a short status."""

    key: str
    advance: int = 1
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class PhaseNote:
    """A new status note for a phase, with no progress."""

    key: str
    note: str


@dataclass(frozen=True, kw_only=True)
class EpisodeDone:
    """One episode of phase ``key`` finished (a bar advances by one)."""

    key: str
    task_id: str
    success: bool
    steps: int
    reason: str
    wins: int  # episodes of this phase won so far
    #: an infrastructure error (environment or model backend): not a loss
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class Message:
    """A line worth showing to the user (a result, a choice that was made)."""

    text: str


Event = PhaseStarted | PhaseAdvanced | PhaseNote | EpisodeDone | Message


#: receives progress events (must not raise; must be cheap)
ProgressSink = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The default sink: drop every event."""
