"""The context store: contexts, learned contexts (with job claims) and queries in SQL.

All writes are short transactions. The claim of a sleep-time job is a single
compare-and-set ``UPDATE`` on the learned-context row (atomic on SQLite and
PostgreSQL alike), and the row itself is created with ``INSERT ... ON CONFLICT DO
NOTHING`` on the unique key (context, content hash, generator-config hash), so any
number of duplicated or redelivered jobs store exactly one learned context.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from nightowl.config_sleep import GeneratorConfig
from nightowl.db import session_scope
from nightowl.errors import UnknownNameError, UserError
from nightowl.ledger.tables import as_utc, detached
from nightowl.sleeptime.schema import ContextRow, LearnedContextRow, QueryRow, utcnow

CONTEXT_KINDS: tuple[str, ...] = ("document", "conversation", "environment")
LearnedStatus = Literal["fresh", "stale", "missing"]


def content_hash(content: str) -> str:
    """sha256 hex of the context text."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


@dataclass(frozen=True, kw_only=True)
class ContextRecord:
    """A context as stored."""

    id: str
    name: str
    kind: str
    content: str
    content_hash: str
    revision: int
    predictability: float | None
    updated_at: datetime

    @classmethod
    def of(cls, row: ContextRow) -> ContextRecord:
        """Copy a row into a detached record."""
        return detached(cls, row, updated_at=as_utc(row.updated_at) or utcnow())


@dataclass(frozen=True, kw_only=True)
class LearnedRecord:
    """A learned context (any state) as stored."""

    id: int
    context_id: str
    content_hash: str
    config_hash: str
    context_revision: int
    version: int
    state: str
    text: str
    qa: list[dict[str, str]]
    rounds: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    stop_reason: str
    claimed_by: str | None
    heartbeat_at: datetime | None
    attempts: int

    @classmethod
    def of(cls, row: LearnedContextRow) -> LearnedRecord:
        """Copy a row into a detached record."""
        return detached(cls, row, qa=list(row.qa or []), heartbeat_at=as_utc(row.heartbeat_at))


@dataclass(frozen=True, kw_only=True)
class ClaimResult:
    """Outcome of trying to claim the job for one learned context.

    ``claimed`` True: the caller now holds the row (``learned`` carries any progress a
    paused or dead predecessor saved). False: ``learned.state`` says why ("done", or
    "running" under another live worker).
    """

    claimed: bool
    learned: LearnedRecord


@dataclass(frozen=True, kw_only=True)
class Progress:
    """What a job has produced so far (saved between rounds)."""

    text: str
    qa: list[dict[str, str]]
    rounds: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    stop_reason: str = ""
    run_id: str | None = None


class ContextStore:
    """SQL access for sleep-time compute."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    # --- contexts ------------------------------------------------------------------
    def add_context(self, content: str, *, kind: str = "document", name: str = "") -> ContextRecord:
        """Store a new context and return it."""
        if kind not in CONTEXT_KINDS:
            raise UserError(f"unknown context kind {kind!r}; known: {', '.join(CONTEXT_KINDS)}")
        if not content.strip():
            raise UserError("a context must not be empty")
        now = utcnow()
        row = ContextRow(
            id=uuid.uuid4().hex,
            name=name,
            kind=kind,
            content=content,
            content_hash=content_hash(content),
            revision=1,
            created_at=now,
            updated_at=now,
        )
        with session_scope(self.sessions) as s:
            s.add(row)
            s.flush()
            return ContextRecord.of(row)

    def get(self, ref: str) -> ContextRecord:
        """A context by id, unique id prefix (>= 4 chars) or name."""
        with self.sessions() as s:
            row = s.get(ContextRow, ref)
            if row is None and ref:
                rows = list(s.scalars(select(ContextRow).where(ContextRow.name == ref)))
                if not rows and len(ref) >= 4:
                    rows = list(s.scalars(select(ContextRow).where(ContextRow.id.startswith(ref))))
                if len(rows) > 1:
                    raise UserError(
                        f"context {ref!r} is ambiguous ({len(rows)} matches); use its id"
                    )
                row = rows[0] if rows else None
            if row is None:
                raise UnknownNameError("context", ref)
            return ContextRecord.of(row)

    def list_contexts(self) -> list[ContextRecord]:
        """All contexts, oldest first."""
        with self.sessions() as s:
            rows = s.scalars(select(ContextRow).order_by(ContextRow.created_at, ContextRow.id))
            return [ContextRecord.of(r) for r in rows]

    def set_content(self, ref: str, content: str) -> ContextRecord:
        """Replace a context's text; a real change bumps the revision (c' goes stale)."""
        if not content.strip():
            raise UserError("a context must not be empty")
        ctx = self.get(ref)
        new_hash = content_hash(content)
        if new_hash == ctx.content_hash:
            return ctx
        with session_scope(self.sessions) as s:
            row = s.get(ContextRow, ctx.id)
            assert row is not None
            row.content = content
            row.content_hash = new_hash
            row.revision = row.revision + 1
            row.updated_at = utcnow()
            s.flush()
            return ContextRecord.of(row)

    def append(self, ref: str, text: str, *, separator: str = "\n") -> ContextRecord:
        """Append text (e.g. a new conversation turn) to a context."""
        ctx = self.get(ref)
        return self.set_content(ctx.id, ctx.content + separator + text)

    def set_predictability(self, context_id: str, value: float | None) -> None:
        """Store exp(mean per-token log p(q|c)) measured over past queries."""
        with session_scope(self.sessions) as s:
            s.execute(
                update(ContextRow).where(ContextRow.id == context_id).values(predictability=value)
            )

    # --- learned contexts ----------------------------------------------------------
    def learned_for(
        self, context_id: str, *, state: str | None = "done", key: tuple[str, str] | None = None
    ) -> list[LearnedRecord]:
        """Learned contexts of a context (of one (content, config) hash ``key``), newest first."""
        with self.sessions() as s:
            q = select(LearnedContextRow).where(LearnedContextRow.context_id == context_id)
            if state is not None:
                q = q.where(LearnedContextRow.state == state)
            if key is not None:
                q = q.where(LearnedContextRow.content_hash == key[0],
                            LearnedContextRow.config_hash == key[1])
            rows = s.scalars(
                q.order_by(LearnedContextRow.version.desc(), LearnedContextRow.id.desc())
            )
            return [LearnedRecord.of(r) for r in rows]

    def fresh_learned(
        self, ctx: ContextRecord, *, config_hash: str | None = None
    ) -> tuple[LearnedStatus, LearnedRecord | None]:
        """The newest finished c' for the context's *current* content, if any.

        Returns ("fresh", c') when one exists (preferring ``config_hash``), ("stale",
        newest outdated c') when only outdated ones exist, else ("missing", None).
        """
        done = self.learned_for(ctx.id)
        if current := [lc for lc in done if lc.content_hash == ctx.content_hash]:
            preferred = [lc for lc in current if lc.config_hash == config_hash]
            return "fresh", (preferred or current)[0]
        if done:
            return "stale", done[0]
        return "missing", None

    def claim(
        self,
        ctx: ContextRecord,
        config: GeneratorConfig,
        *,
        worker: str,
        lease_s: float,
        now: datetime | None = None,
    ) -> ClaimResult:
        """Create-or-claim the learned-context row for (ctx content, config).

        The row is claimable when it is pending, paused or failed, or running under a
        worker whose heartbeat is older than ``lease_s`` (presumed dead), or already
        claimed by this very ``worker``.
        """
        now = now or utcnow()
        chash = config.config_hash()
        with session_scope(self.sessions) as s:
            newest = select(func.max(LearnedContextRow.version))
            version = (s.scalar(newest.where(LearnedContextRow.context_id == ctx.id)) or 0) + 1
            values = {
                "context_id": ctx.id,
                "content_hash": ctx.content_hash,
                "config_hash": chash,
                "config": config.model_dump(mode="json"),
                "context_revision": ctx.revision,
                "version": version,
                "state": "pending",
                "text": "",
                "qa": [],
                "created_at": now,
            }
            dialect = s.get_bind().dialect.name
            ins_mod = postgresql if dialect == "postgresql" else sqlite
            stmt = (
                ins_mod.insert(LearnedContextRow)
                .values(**values)
                .on_conflict_do_nothing(
                    index_elements=["context_id", "content_hash", "config_hash"]
                )
            )
            s.execute(stmt)
        key = (
            (LearnedContextRow.context_id == ctx.id)
            & (LearnedContextRow.content_hash == ctx.content_hash)
            & (LearnedContextRow.config_hash == chash)
        )
        stale_before = now - timedelta(seconds=lease_s)
        with session_scope(self.sessions) as s:
            claimable = LearnedContextRow.state.in_(("pending", "paused", "failed")) | (
                (LearnedContextRow.state == "running")
                & (
                    (LearnedContextRow.heartbeat_at < stale_before)
                    | (LearnedContextRow.claimed_by == worker)
                )
            )
            res = s.execute(
                update(LearnedContextRow)
                .where(key & claimable)
                .values(
                    state="running",
                    claimed_by=worker,
                    heartbeat_at=now,
                    attempts=LearnedContextRow.attempts + 1,
                    error="",
                )
                .execution_options(synchronize_session=False)
            )
            claimed = res.rowcount == 1  # type: ignore[attr-defined]
        with self.sessions() as s:
            row = s.scalars(select(LearnedContextRow).where(key)).one()
            return ClaimResult(claimed=claimed, learned=LearnedRecord.of(row))

    def save_progress(self, learned_id: int, worker: str, progress: Progress) -> bool:
        """Store progress and refresh the heartbeat; False if the claim was lost."""
        return self._write(learned_id, worker, progress, state="running")

    def pause(self, learned_id: int, worker: str, progress: Progress) -> bool:
        """Store progress and release the claim so a later job resumes from it."""
        return self._write(learned_id, worker, progress, state="paused")

    def finish(self, learned_id: int, worker: str, progress: Progress) -> bool:
        """Mark the c' done; False (and nothing written) if this worker lost the claim."""
        return self._write(learned_id, worker, progress, state="done")

    def fail(self, learned_id: int, worker: str, error: str) -> bool:
        """Release the claim with an error message (a later job may retry)."""
        values = {"state": "failed", "error": error[:2000], "heartbeat_at": utcnow()}
        return self._update(learned_id, worker, values)

    def _write(self, learned_id: int, worker: str, progress: Progress, *, state: str) -> bool:
        now = utcnow()
        values: dict[str, object] = {**asdict(progress), "state": state, "heartbeat_at": now}
        if progress.run_id is None:
            del values["run_id"]
        if state == "done":
            values["finished_at"] = now
        return self._update(learned_id, worker, values)

    def _update(self, learned_id: int, worker: str, values: dict[str, object]) -> bool:
        """Write ``values`` if ``worker`` still holds the running claim; False if it lost it."""
        with session_scope(self.sessions) as s:
            res = s.execute(
                update(LearnedContextRow)
                .where(
                    LearnedContextRow.id == learned_id,
                    LearnedContextRow.claimed_by == worker,
                    LearnedContextRow.state == "running",
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            return res.rowcount == 1  # type: ignore[attr-defined]

    def count_learned(self, context_id: str | None = None, *, state: str | None = "done") -> int:
        """How many learned-context rows exist (tests, reports)."""
        with self.sessions() as s:
            q = select(func.count()).select_from(LearnedContextRow)
            if context_id is not None:
                q = q.where(LearnedContextRow.context_id == context_id)
            if state is not None:
                q = q.where(LearnedContextRow.state == state)
            return int(s.scalar(q) or 0)

    # --- queries -------------------------------------------------------------------
    def record_query(self, row: QueryRow) -> int:
        """Store one answered query; returns its id."""
        with session_scope(self.sessions) as s:
            s.add(row)
            s.flush()
            return row.id

    def query_counts(self) -> dict[str, int]:
        """Past queries per context id."""
        with self.sessions() as s:
            rows = s.execute(
                select(QueryRow.context_id, func.count()).group_by(QueryRow.context_id)
            )
            return {cid: int(n) for cid, n in rows}

    def recent_queries(self, context_id: str, limit: int = 5) -> list[str]:
        """The latest distinct queries about a context."""
        with self.sessions() as s:
            rows = s.scalars(
                select(QueryRow.query)
                .where(QueryRow.context_id == context_id)
                .order_by(QueryRow.id.desc())
                .limit(limit * 3)
            )
            return list(dict.fromkeys(rows))[:limit]
