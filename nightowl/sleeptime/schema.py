"""SQL tables of sleep-time compute: contexts, learned contexts, queries.

A *context* ``c`` is text the system will be asked about later (a document, a
conversation, an environment description). A *learned context* ``c'`` is what a model
wrote about ``c`` while the system was idle; it is keyed by (context, content hash,
generator-config hash), and the unique constraint on that key is what makes sleep-time
jobs idempotent: a redelivered or duplicated job finds the row and stores nothing new.

The learned-context row doubles as the job's claim: ``state`` moves
pending -> running -> (paused ->) done (or failed), ``claimed_by`` names the worker
that holds it and ``heartbeat_at`` tells others whether that worker is still alive.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from nightowl.db import Base
from nightowl.storage import utcnow


class ContextRow(Base):
    """A known context ``c``."""

    __tablename__ = "sleep_contexts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(32), default="document")
    content: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    #: incremented on every content change (edit, appended conversation turn)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    #: exp(mean per-token log p(q|c)) over past queries, when a scoring backend measured it
    predictability: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LearnedContextRow(Base):
    """A learned context ``c'`` (and the claim of the job that writes it)."""

    __tablename__ = "sleep_learned_contexts"
    __table_args__ = (
        UniqueConstraint("context_id", "content_hash", "config_hash", name="uq_sleep_learned_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    context_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("sleep_contexts.id", ondelete="CASCADE"), index=True
    )
    content_hash: Mapped[str] = mapped_column(String(64))
    config_hash: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: the context revision this c' was computed from
    context_revision: Mapped[int] = mapped_column(Integer, default=1)
    #: 1 for the first c' of a context, +1 for every refresh
    version: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    text: Mapped[str] = mapped_column(Text, default="")
    #: anticipated questions with answers parsed from the text: [{"q": ..., "a": ...}]
    qa: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    rounds: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    stop_reason: Mapped[str] = mapped_column(String(32), default="")
    run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class QueryRow(Base):
    """One query about a context and how it was answered."""

    __tablename__ = "sleep_queries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    context_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("sleep_contexts.id", ondelete="CASCADE"), index=True
    )
    query: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text, default="")
    budget: Mapped[str] = mapped_column(String(16), default="mid")
    mode: Mapped[str] = mapped_column(String(16), default="with")
    learned_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: "fresh" (c' used), "missing" (none existed), "stale" (one existed but was outdated)
    learned_status: Mapped[str] = mapped_column(String(16), default="missing")
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
