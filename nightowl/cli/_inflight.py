"""What a run report shows about progress: finished of planned, rates of what, in flight.

Shared by `nightowl report` and `nightowl ledger report`; `watch_run` is the live bar of
`nightowl run --via celery --watch`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from nightowl.app.leasing import RunProgress
from nightowl.ledger.metrics import RunReport


def success_text(rep: RunReport, digits: int = 0) -> str:
    """``"100% (9/9 finished)"``: a rate says what it is of (infrastructure errors left out)."""
    played = rep.n_finished - rep.errors
    return f"{rep.success_rate:.{digits}%} ({rep.successes}/{played} finished)"


def inflight_table(rep: RunReport) -> Table | None:
    """Episodes running, re-queued or failed (distributed runs); None when there are none."""
    rows = {v.task_id: v for v in [*rep.requeued, *rep.failed, *rep.in_flight]}
    if not rows:
        return None
    t = Table(title=f"episodes in flight: {len(rep.in_flight)}, waiting: {rep.queued}")
    for col in ("task", "state", "worker (host:pid)", "step", "heartbeat", "attempt", "why"):
        t.add_column(col, justify="right" if col in ("step", "attempt") else "left")
    for v in rows.values():
        age = "-" if v.heartbeat_age_s is None or v.state != "running" \
            else f"{v.heartbeat_age_s:.0f} s ago"
        worker = f"{v.host}:{v.pid}" if v.host else "-"
        why = v.reason or ""
        if v.requeues:
            why = f"re-queued {v.requeues}x: {why}"
        t.add_row(v.task_id, v.state, worker, str(v.step), age, str(v.attempt), why)
    return t


def watch_run(
    console: Console,
    poll: Callable[[], RunProgress],
    *,
    every_s: float = 1.0,
) -> RunProgress:
    """A live progress bar (with ETA) until every episode finished or failed."""
    snap = poll()
    columns = (
        TextColumn("[bold]episodes"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[state]}"), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("run", total=snap.total, state="")
        while True:
            state = f"running {snap.running}, waiting {snap.queued}, failed {snap.failed}"
            bar.update(task, completed=snap.finished + snap.failed, total=snap.total,
                       state=state)
            if snap.done:
                return snap
            time.sleep(every_s)
            snap = poll()
