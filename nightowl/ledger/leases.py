"""Episode leases: who runs which episode of a distributed run, fenced by attempt number.

One ``episode_leases`` row per (run, task), written when the run is enqueued. Its life:

- ``queued``: a message for generation ``gen`` is on the broker.
- ``running``: a worker claimed it (`LeaseStore.claim`): ``attempt`` went up by one and
  is that worker's *fencing token*; the worker heartbeats the row every few seconds and
  every ledger write of the episode checks the token in the same transaction
  (`LeaseStore.fence`), so a worker that lost its lease can no longer write.
- ``done``: the episode finished (its outcome is in ``episodes``).
- ``failed``: given up as an infrastructure failure (the job raised, or it was claimed
  ``max_attempts`` times without finishing); ``reason`` says why.

A running row whose heartbeat is older than the lease is *expired*: whoever notices
first (`LeaseStore.requeue_expired`: the workers' lease monitor, ``nightowl run --watch``)
bumps ``gen`` and sends a new message; a message whose ``gen`` is behind the row's is a
late duplicate and is refused. A redelivered message of the current generation may take
over an expired lease directly (the broker's redelivery stays the second line).
Timestamps are the writers' clocks: hosts must agree to within a few seconds (NTP).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Integer,
    String,
    Text,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from nightowl.db import Base
from nightowl.errors import StoreError
from nightowl.ledger.tables import TS, as_utc, detached
from nightowl.storage import Database, utcnow


class LeaseLostError(StoreError):
    """This worker no longer holds the episode's lease (it expired and was taken over)."""


class EpisodeLease(Base):
    """The lease of one episode of a distributed run (migration ``0005_leases``)."""

    __tablename__ = "episode_leases"

    run_id: Mapped[str] = mapped_column(
        String(32),
        ForeignKey("runs.id", ondelete="CASCADE", name="fk_episode_leases_run_id"),
        primary_key=True,
    )
    task_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    state: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    gen: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    requeues: Mapped[int] = mapped_column(Integer, default=0)
    host: Mapped[str | None] = mapped_column(String(200), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    step: Mapped[int] = mapped_column(Integer, default=0)
    episode_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: why it was last re-queued ("lease expired: host:pid silent 34 s at step 3")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the episode job (JSON) a re-queue sends again
    payload: Mapped[Any] = mapped_column(JSON, nullable=True)
    queued_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)


@dataclass(frozen=True)
class LeaseRow:
    """A plain copy of one lease row."""

    run_id: str
    task_id: str
    state: str
    gen: int
    attempt: int
    requeues: int
    host: str | None
    pid: int | None
    step: int
    episode_id: str | None
    reason: str | None
    payload: Any
    queued_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    ended_at: datetime | None

    @classmethod
    def of(cls, r: EpisodeLease) -> LeaseRow:
        """Copy an ORM row (timestamps in UTC)."""
        return detached(cls, r, queued_at=as_utc(r.queued_at) or r.queued_at,
                        started_at=as_utc(r.started_at), heartbeat_at=as_utc(r.heartbeat_at),
                        ended_at=as_utc(r.ended_at))

    def age_s(self, now: datetime | None = None) -> float | None:
        """Seconds since the last heartbeat (None before the first claim)."""
        if self.heartbeat_at is None:
            return None
        return ((now or utcnow()) - self.heartbeat_at).total_seconds()


@dataclass(frozen=True)
class Holder:
    """The worker process holding a lease: host, pid and its fencing token."""

    run_id: str
    task_id: str
    attempt: int
    host: str
    pid: int


@dataclass(frozen=True)
class Requeue:
    """One re-queue decided by `LeaseStore.requeue_expired`: send ``payload`` as ``gen``."""

    run_id: str
    task_id: str
    gen: int
    payload: Any
    reason: str


def _set(s: Session, where: Any, **values: Any) -> int:
    """Inside a transaction: ``values`` on the leases matching ``where``; how many changed."""
    res = s.execute(update(EpisodeLease).where(where).values(**values)
                    .execution_options(synchronize_session=False))
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


class LeaseStore:
    """Reads and conditional writes of ``episode_leases`` (every write is one UPDATE)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def _key(run_id: str, task_id: str) -> Any:
        return (EpisodeLease.run_id == run_id) & (EpisodeLease.task_id == task_id)

    def enqueue(self, run_id: str, task_id: str, payload: Any) -> None:
        """Create the queued lease of one episode (before its message is sent)."""
        row = EpisodeLease(run_id=run_id, task_id=task_id, state="queued", gen=0, attempt=0,
                           requeues=0, step=0, payload=payload, queued_at=utcnow())
        self.db.write(lambda s: s.merge(row))

    def get(self, run_id: str, task_id: str) -> LeaseRow | None:
        """One lease, or None."""
        return self.db.read(
            lambda s: next((LeaseRow.of(r) for r in s.scalars(
                select(EpisodeLease).where(self._key(run_id, task_id)))), None)
        )

    def for_run(self, run_id: str) -> list[LeaseRow]:
        """Every lease of a run, in task order."""
        return self.db.read(lambda s: [LeaseRow.of(r) for r in s.scalars(
            select(EpisodeLease).where(EpisodeLease.run_id == run_id)
            .order_by(EpisodeLease.queued_at, EpisodeLease.task_id))])

    def claim(self, run_id: str, task_id: str, gen: int, lease_s: float) -> Holder | None:
        """Take the lease for a message of generation ``gen``; None when refused.

        Claimable: queued at ``gen``, or running at ``gen`` with an expired heartbeat (a
        redelivered message after its worker died). A message of an older generation,
        a live holder or a finished episode is refused.
        """
        host, pid = socket.gethostname(), os.getpid()
        now = utcnow()
        stale = now - timedelta(seconds=lease_s)

        def _do(s: Session) -> int | None:
            claimable = (EpisodeLease.state == "queued") | (
                (EpisodeLease.state == "running") & (EpisodeLease.heartbeat_at < stale))
            if _set(s, self._key(run_id, task_id) & (EpisodeLease.gen == gen) & claimable,
                    state="running", attempt=EpisodeLease.attempt + 1, host=host, pid=pid,
                    started_at=now, heartbeat_at=now) != 1:
                return None
            return s.scalar(select(EpisodeLease.attempt).where(self._key(run_id, task_id)))

        attempt = self.db.write(_do)
        if attempt is None:
            return None
        return Holder(run_id=run_id, task_id=task_id, attempt=int(attempt), host=host, pid=pid)

    def fence(self, s: Session, h: Holder, *, step: int | None = None, **values: Any) -> None:
        """Inside a transaction: refresh the heartbeat, or raise `LeaseLostError`."""
        vals: dict[str, Any] = {"heartbeat_at": utcnow(), **values}
        if step is not None:
            vals["step"] = step
        held = (self._key(h.run_id, h.task_id) & (EpisodeLease.attempt == h.attempt)
                & (EpisodeLease.state == "running"))
        if _set(s, held, **vals) != 1:
            raise LeaseLostError(
                f"episode {h.task_id} of run {h.run_id[:8]}: lease attempt {h.attempt} "
                "was taken over (this worker was presumed dead); its writes are refused"
            )

    def _fenced_write(self, h: Holder, **values: Any) -> bool:
        """`fence` in a transaction of its own; False (nothing written) when the lease was lost."""
        try:
            self.db.write(lambda s: self.fence(s, h, **values))
        except LeaseLostError:
            return False
        return True

    def heartbeat(self, h: Holder) -> bool:
        """Refresh the heartbeat; False when the lease was lost."""
        return self._fenced_write(h)

    def finish(self, h: Holder) -> bool:
        """Mark the episode done; False (nothing written) when the lease was lost."""
        return self._fenced_write(h, state="done", ended_at=utcnow())

    def fail(self, h: Holder, reason: str) -> bool:
        """The holder gives the episode up (an infrastructure error); False if lost."""
        return self._fenced_write(h, state="failed", reason=reason[:2000], ended_at=utcnow())

    def give_up(self, run_id: str, task_id: str, gen: int, reason: str) -> bool:
        """Fail a queued episode that was claimed too often (nobody holds it)."""

        def _do(s: Session) -> int:
            return _set(s, self._key(run_id, task_id) & (EpisodeLease.gen == gen)
                        & (EpisodeLease.state == "queued"),
                        state="failed", reason=reason[:2000], ended_at=utcnow())

        return self.db.write(_do) == 1

    def requeue_expired(self, lease_s: float, run_id: str | None = None) -> list[Requeue]:
        """Expired running leases, each moved to the next generation (at most once).

        The caller sends each `Requeue`'s payload with its ``gen``; a concurrent caller
        that saw the same row finds it already moved and skips it.
        """
        now = utcnow()
        stale = now - timedelta(seconds=lease_s)
        q = select(EpisodeLease).where((EpisodeLease.state == "running")
                                       & (EpisodeLease.heartbeat_at < stale))
        if run_id is not None:
            q = q.where(EpisodeLease.run_id == run_id)
        rows = self.db.read(lambda s: [LeaseRow.of(r) for r in s.scalars(q)])
        out = []
        for r in rows:
            age = r.age_s(now) or 0.0
            reason = (f"lease expired: {r.host}:{r.pid} silent {age:.0f} s at step {r.step} "
                      f"(attempt {r.attempt})")

            def _do(s: Session, r: LeaseRow = r, reason: str = reason) -> int:
                return _set(s, self._key(r.run_id, r.task_id) & (EpisodeLease.state == "running")
                            & (EpisodeLease.attempt == r.attempt) & (EpisodeLease.gen == r.gen),
                            state="queued", gen=r.gen + 1, requeues=EpisodeLease.requeues + 1,
                            reason=reason, queued_at=now)

            if self.db.write(_do) == 1:
                out.append(Requeue(r.run_id, r.task_id, r.gen + 1, r.payload, reason))
        return out

    def lost_messages(self, older_than_s: float, run_id: str | None = None) -> list[Requeue]:
        """Queued leases waiting longer than ``older_than_s`` (their message may be lost).

        Call it only when the broker's queue is empty: then nothing will deliver them.
        Sending the same generation again is safe (a second claim is refused).
        """
        before = utcnow() - timedelta(seconds=older_than_s)
        q = select(EpisodeLease).where((EpisodeLease.state == "queued")
                                       & (EpisodeLease.queued_at < before))
        if run_id is not None:
            q = q.where(EpisodeLease.run_id == run_id)
        rows = self.db.read(lambda s: [LeaseRow.of(r) for r in s.scalars(q)])
        now = utcnow()
        reason = f"message lost (queued {older_than_s:.0f}+ s, broker queue empty)"

        def _touch(s: Session) -> list[Requeue]:
            out = []
            for r in rows:
                if _set(s, self._key(r.run_id, r.task_id) & (EpisodeLease.gen == r.gen)
                        & (EpisodeLease.state == "queued") & (EpisodeLease.queued_at < before),
                        queued_at=now, reason=reason, requeues=EpisodeLease.requeues + 1) == 1:
                    out.append(Requeue(r.run_id, r.task_id, r.gen, r.payload, reason))
            return out

        return self.db.write(_touch) if rows else []
