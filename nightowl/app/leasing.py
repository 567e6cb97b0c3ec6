"""Episode leases at work: settings, the holder's heartbeat, the re-queue check, progress.

- `LeaseSettings` (``NIGHTOWL_EPISODE_*``): lease length, heartbeat and check periods,
  attempts before an episode is given up as an infrastructure failure.
- `Ticker`: a thread that calls a function periodically: the heartbeat that refreshes the
  holder's lease every ``heartbeat_s`` while the episode runs (a step may take longer
  than the lease; the heartbeat does not), and each worker's lease monitor.
- `check_leases`: one pass of the re-queue check (each worker's lease monitor runs it every
  ``check_s``; so does ``nightowl run --via celery --watch``): expired leases move to the
  next generation and are sent again; queued leases whose message was lost (broker
  restarted without persistence) are sent again once the broker's queue is empty.
- `run_progress`: finished / in flight / queued / failed of one run, for ``--watch``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from nightowl.errors import ConfigError
from nightowl.ledger.leases import LeaseStore

if TYPE_CHECKING:
    from nightowl.storage import Database

log = logging.getLogger(__name__)


class LeaseSettings(BaseSettings):
    """How distributed episodes are leased (environment variables ``NIGHTOWL_EPISODE_*``)."""

    model_config = SettingsConfigDict(env_prefix="NIGHTOWL_EPISODE_", extra="ignore")

    lease_s: float = Field(
        30.0, ge=1, le=3600,
        description="an episode whose holder has not heartbeaten for this long is re-queued",
    )
    heartbeat_s: float | None = Field(
        None, gt=0, description="heartbeat period (default: lease / 6, at most 5 s)"
    )
    check_s: float | None = Field(
        None, gt=0, description="re-queue check period (default: lease / 6, at most 5 s)"
    )
    max_attempts: int = Field(
        3, ge=1, description="claims of one episode before it fails as an infrastructure error"
    )

    @property
    def heartbeat_every(self) -> float:
        """Seconds between heartbeats."""
        return self.heartbeat_s or min(5.0, self.lease_s / 6)

    @property
    def check_every(self) -> float:
        """Seconds between re-queue checks."""
        return self.check_s or min(5.0, self.lease_s / 6)


def load_lease_settings() -> LeaseSettings:
    """`LeaseSettings` from the environment, errors as one-line `ConfigError`s."""
    try:
        return LeaseSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(
            f"bad setting NIGHTOWL_EPISODE_{where.upper()}: {first['msg']}"
        ) from None


class Resender(Protocol):
    """Where re-queued episode jobs go (`nightowl.workers.queue.CeleryQueue` is one)."""

    def resend_episode(self, payload: Any, gen: int) -> str:
        """Send one episode job payload again as generation ``gen``."""

    def waiting(self) -> int | None:
        """Messages waiting on the episodes queue (None: unknown)."""


class Ticker:
    """Calls ``tick`` every ``every_s`` seconds from a daemon thread until stopped.

    Used for the holder's heartbeat (as a context manager: it runs for the block) and
    for a worker's lease monitor (started for the worker's life). ``tick`` returning
    False ends the thread; an exception (the database or broker down) is logged as
    "``what`` failed" and the next period tries again.
    """

    def __init__(self, name: str, every_s: float, tick: Callable[[], object], what: str) -> None:
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(tick, what), name=name,
                                        daemon=True)

    def _loop(self, tick: Callable[[], object], what: str) -> None:
        while not self._stop.wait(self.every_s):
            try:
                if tick() is False:
                    return  # a heartbeat's lease was taken over: the fenced writes will fail
            except Exception as exc:  # noqa: BLE001 - a hiccup: try again next period
                log.warning("%s failed: %s", what, exc)

    def start(self) -> Ticker:
        """Start the thread."""
        self._thread.start()
        return self

    def __enter__(self) -> Ticker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every_s + 5)


def check_leases(
    db: Database, queue: Resender, settings: LeaseSettings, run_id: str | None = None
) -> None:
    """One pass of the re-queue check (any number of processes may run it at once)."""
    leases = LeaseStore(db)
    for rq in leases.requeue_expired(settings.lease_s, run_id=run_id):
        row = leases.get(rq.run_id, rq.task_id)
        if row is not None and row.attempt >= settings.max_attempts:
            leases.give_up(rq.run_id, rq.task_id, rq.gen,
                           f"gave up after {row.attempt} attempts; last: {rq.reason}")
            continue
        queue.resend_episode(rq.payload, rq.gen)
        log.warning("re-queued episode %s of run %s: %s", rq.task_id, rq.run_id[:8], rq.reason)
    if queue.waiting() == 0:
        for rq in leases.lost_messages(settings.lease_s, run_id=run_id):
            queue.resend_episode(rq.payload, rq.gen)
            log.warning("re-sent episode %s of run %s: %s", rq.task_id, rq.run_id[:8], rq.reason)


@dataclass(frozen=True)
class RunProgress:
    """Where a distributed run stands (from its leases)."""

    total: int
    finished: int
    running: int
    queued: int
    failed: int

    @property
    def done(self) -> bool:
        """Every episode finished or failed."""
        return self.finished + self.failed >= self.total


def run_progress(db: Database, run_id: str) -> RunProgress:
    """Count one run's leases by state."""
    rows = LeaseStore(db).for_run(run_id)
    n = Counter(r.state for r in rows)
    return RunProgress(total=len(rows), finished=n["done"], running=n["running"],
                       queued=n["queued"], failed=n["failed"])
