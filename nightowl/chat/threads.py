"""Thread store: conversations in SQL, reconciled with what clients send.

OpenAI-style clients resend the whole history every turn; others send only the new
message and rely on the server's copy. `ThreadStore.sync` accepts both: when the
incoming messages continue the stored ones they are appended; a single new user
message is appended to the stored history; anything else is an edit, which keeps the
common prefix and drops learned contexts past it (an append never drops them).

All methods are blocking SQL; async callers run them in a worker thread.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from nightowl.chat.tables import MessageRow, ThreadContextRow, ThreadRow
from nightowl.errors import BudgetExceededError, UserError
from nightowl.ledger.tables import as_utc, detached
from nightowl.llm.base import ChatMessage
from nightowl.sleeptime.schema import utcnow
from nightowl.storage import Database


@dataclass(frozen=True, kw_only=True)
class ThreadRecord:
    """A thread's identity, revision (message count) and spend."""

    id: str
    tenant: str
    external_id: str
    revision: int
    budget_usd: float | None
    spent_usd: float
    last_active_at: datetime


@dataclass(frozen=True, kw_only=True)
class LearnedThreadContext:
    """c': what sleep-time learned from messages 1..``revision``."""

    thread_id: str
    revision: int
    text: str
    cost_usd: float


def _record(row: ThreadRow) -> ThreadRecord:
    return detached(ThreadRecord, row, last_active_at=as_utc(row.last_active_at) or utcnow())


def _add_messages(
    s: Session, thread_id: str, after: int, messages: list[ChatMessage], *, tier: str, cost: float
) -> int:
    """Store ``messages`` as seq ``after`` + 1, ...; the last one is the thread's revision."""
    now = utcnow()
    for seq, m in enumerate(messages, start=after + 1):
        s.add(
            MessageRow(
                thread_id=thread_id,
                seq=seq,
                role=m.role,
                content=m.content,
                tier=tier,
                cost_usd=cost,
                created_at=now,
            )
        )
    revision = after + len(messages)
    s.execute(
        update(ThreadRow)
        .where(ThreadRow.id == thread_id)
        .values(revision=revision, last_active_at=now)
    )
    return revision


class ThreadStore:
    """SQL access to threads, their messages and learned contexts."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def open(
        self, tenant: str, external_id: str, *, budget_usd: float | None = None
    ) -> ThreadRecord:
        """The thread ``external_id`` of ``tenant``, created on first use."""
        if not external_id or len(external_id) > 200:
            raise UserError("a thread id must be 1-200 characters")

        stmt = select(ThreadRow).where(
            ThreadRow.tenant == tenant, ThreadRow.external_id == external_id
        )

        def create(s: Session) -> ThreadRecord:
            row = s.scalar(stmt)
            if row is None:
                now = utcnow()
                row = ThreadRow(
                    id=uuid.uuid4().hex,
                    tenant=tenant,
                    external_id=external_id,
                    revision=0,
                    budget_usd=budget_usd,
                    spent_usd=0.0,
                    created_at=now,
                    last_active_at=now,
                )
                s.add(row)
                s.flush()
            return _record(row)

        found = self.db.read(lambda s: s.scalar(stmt))
        return _record(found) if found is not None else self.db.write(create)

    def get(self, thread_id: str) -> ThreadRecord:
        """A thread by its internal id."""
        row = self.db.read(lambda s: s.get(ThreadRow, thread_id))
        if row is None:
            raise UserError(f"unknown thread {thread_id!r}")
        return _record(row)

    def messages(self, thread_id: str, *, after: int = 0) -> list[ChatMessage]:
        """Stored messages with ``seq > after``, in order."""
        stmt = (
            select(MessageRow.role, MessageRow.content)
            .where(MessageRow.thread_id == thread_id, MessageRow.seq > after)
            .order_by(MessageRow.seq)
        )
        rows = self.db.read(lambda s: s.execute(stmt).all())
        return [ChatMessage(role=r, content=c) for r, c in rows]  # type: ignore[arg-type]

    def sync(self, thread_id: str, incoming: list[ChatMessage]) -> list[ChatMessage]:
        """Reconcile ``incoming`` with the stored history; returns the full history."""
        stored = self.messages(thread_id)
        convo = [m for m in incoming if m.role != "system"]
        keep = 0
        while keep < min(len(stored), len(convo)) and stored[keep] == convo[keep]:
            keep += 1
        new = convo[keep:]
        if keep < len(stored) and len(convo) == 1 and convo[0].role == "user":
            keep, new = len(stored), convo  # only the new message was sent

        def w(s: Session) -> None:
            if keep < len(stored):  # an edit: drop the replaced messages and their c'
                s.execute(
                    delete(MessageRow).where(
                        MessageRow.thread_id == thread_id, MessageRow.seq > keep
                    )
                )
                s.execute(
                    delete(ThreadContextRow).where(
                        ThreadContextRow.thread_id == thread_id, ThreadContextRow.revision > keep
                    )
                )
            _add_messages(s, thread_id, keep, new, tier="client", cost=0.0)

        self.db.write(w)
        return stored[:keep] + new

    def append(
        self, thread_id: str, message: ChatMessage, *, tier: str = "", cost: float = 0.0
    ) -> int:
        """Append one message (e.g. the assistant's reply); returns its seq."""

        def w(s: Session) -> int:
            rev = s.scalar(select(ThreadRow.revision).where(ThreadRow.id == thread_id)) or 0
            return _add_messages(s, thread_id, int(rev), [message], tier=tier, cost=cost)

        return self.db.write(w)

    # --- budgets -------------------------------------------------------------------
    def check_budget(self, thread_id: str) -> None:
        """`BudgetExceededError` when the thread's budget is spent."""
        t = self.get(thread_id)
        if t.budget_usd is not None and t.spent_usd >= t.budget_usd:
            raise BudgetExceededError(f"thread {t.external_id} cost", t.budget_usd, t.spent_usd)

    def add_spend(self, thread_id: str, cost: float) -> None:
        """Add ``cost`` USD to the thread's spend (atomic increment)."""
        self.db.write(
            lambda s: s.execute(
                update(ThreadRow)
                .where(ThreadRow.id == thread_id)
                .values(spent_usd=ThreadRow.spent_usd + cost)
            )
        )

    # --- learned contexts -------------------------------------------------------------
    def latest_context(self, thread_id: str) -> LearnedThreadContext | None:
        """The newest c' of the thread (valid: revisions past an edit were deleted)."""
        stmt = (
            select(ThreadContextRow)
            .where(ThreadContextRow.thread_id == thread_id)
            .order_by(ThreadContextRow.revision.desc(), ThreadContextRow.id.desc())
        )
        row = self.db.read(lambda s: s.scalar(stmt))
        if row is None:
            return None
        return LearnedThreadContext(
            thread_id=thread_id, revision=row.revision, text=row.text, cost_usd=row.cost_usd
        )

    def save_context(
        self,
        thread_id: str,
        revision: int,
        text: str,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost_usd: float = 0.0,
    ) -> bool:
        """Store a finished c' in one transaction (a killed job writes nothing).

        Returns False (and writes nothing) when the thread was edited below
        ``revision`` meanwhile, or when a c' for ``revision`` or later already exists
        (a redelivered or concurrent job for the same revision), so each revision gets
        at most one c'.
        """

        def w(s: Session) -> bool:
            # Lock the thread row so two jobs for one thread serialise here (PostgreSQL;
            # SQLite serialises all writers anyway) and the check below is race-free.
            s.execute(select(ThreadRow.id).where(ThreadRow.id == thread_id).with_for_update())
            done = s.scalar(
                select(func.max(ThreadContextRow.revision)).where(
                    ThreadContextRow.thread_id == thread_id
                )
            )
            if done is not None and int(done) >= revision:
                return False
            # The thread may have been edited below ``revision`` while we were thinking.
            current = s.scalar(
                select(func.count())
                .select_from(MessageRow)
                .where(MessageRow.thread_id == thread_id, MessageRow.seq <= revision)
            )
            if int(current or 0) < revision:
                return False
            s.add(
                ThreadContextRow(
                    thread_id=thread_id,
                    revision=revision,
                    text=text,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    cost_usd=cost_usd,
                    created_at=utcnow(),
                )
            )
            return True

        return self.db.write(w)

    def user_turns(self, thread_ids: list[str]) -> dict[str, int]:
        """How many user messages each thread has (its past queries)."""
        if not thread_ids:
            return {}
        stmt = (
            select(MessageRow.thread_id, func.count())
            .where(MessageRow.thread_id.in_(thread_ids), MessageRow.role == "user")
            .group_by(MessageRow.thread_id)
        )
        rows = self.db.read(lambda s: s.execute(stmt).all())
        return {str(t): int(n) for t, n in rows}

    def idle_threads(self, idle_s: float, *, min_new: int = 2) -> list[ThreadRecord]:
        """Threads idle for ``idle_s`` with >= ``min_new`` messages past their newest c'."""
        cutoff = utcnow() - timedelta(seconds=idle_s)
        latest = (
            select(ThreadContextRow.thread_id, func.max(ThreadContextRow.revision).label("rev"))
            .group_by(ThreadContextRow.thread_id)
            .subquery()
        )
        stmt = (
            select(ThreadRow)
            .outerjoin(latest, latest.c.thread_id == ThreadRow.id)
            .where(
                ThreadRow.last_active_at <= cutoff,
                ThreadRow.revision - func.coalesce(latest.c.rev, 0) >= min_new,
            )
            .order_by(ThreadRow.last_active_at)
        )
        return [_record(r) for r in self.db.read(lambda s: list(s.scalars(stmt)))]
