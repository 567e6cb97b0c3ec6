"""Chat tables: API keys, threads, messages, learned thread contexts, chat demos.

Created by migration ``0004_chat`` (its own Alembic branch ``chat``). SQL is the source
of truth: a thread's history, its learned contexts and the tenant-scoped demos survive a
server restart; the demo vectors kept here rebuild the FAISS index.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from nightowl.db import Base
from nightowl.ledger.tables import TS


class ApiKeyRow(Base):
    """A bearer key: only its sha256 is stored; ``tenant`` scopes threads and demos."""

    __tablename__ = "chat_api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    tenant: Mapped[str] = mapped_column(String(200))
    budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    spent_usd: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(TS)
    revoked_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)


class ThreadRow(Base):
    """A conversation; ``external_id`` is the client's thread id, unique per tenant."""

    __tablename__ = "chat_threads"
    __table_args__ = (UniqueConstraint("tenant", "external_id", name="uq_chat_thread_tenant"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(200))
    external_id: Mapped[str] = mapped_column(String(200))
    revision: Mapped[int] = mapped_column(Integer, default=0)
    budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    spent_usd: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(TS)
    last_active_at: Mapped[datetime] = mapped_column(TS)


class MessageRow(Base):
    """One message of a thread; ``seq`` counts from 1 (the thread's revision after it)."""

    __tablename__ = "chat_messages"
    __table_args__ = (UniqueConstraint("thread_id", "seq", name="uq_chat_message_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    thread_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("chat_threads.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    tier: Mapped[str] = mapped_column(String(32), default="")
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(TS)


class ThreadContextRow(Base):
    """A learned context c' of a thread, valid for its messages 1..``revision``.

    Written in one transaction when the rethink finished, so a killed job leaves no row.
    """

    __tablename__ = "chat_thread_contexts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    thread_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("chat_threads.id", ondelete="CASCADE"), index=True
    )
    revision: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(TS)


class ChatDemoRow(Base):
    """An accepted teacher reply kept as a demo for the student, scoped to one tenant."""

    __tablename__ = "chat_demos"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(200), index=True)
    #: the demo's one-step ledger episode (migration 0006; None in rows from before it)
    episode_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    question: Mapped[str] = mapped_column(Text)
    context: Mapped[str] = mapped_column(Text, default="")
    reply: Mapped[str] = mapped_column(Text)
    embedder: Mapped[str] = mapped_column(String(200))
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(TS)
