"""The ledger's tables: runs, episodes, model_calls, tool_calls (migration ``0001``)."""

from __future__ import annotations

import json
import uuid
from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from nightowl.db import Base
from nightowl.storage import BIGINT, utcnow

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")
TS = DateTime(timezone=True)


def _new_id() -> str:
    return uuid.uuid4().hex


def as_utc(ts: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they were written in UTC."""
    if ts is None:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def detached(cls: type[R], row: object, **override: Any) -> R:
    """A ``cls`` record with ``row``'s same-named attributes (``override`` replaces some)."""
    names = [f.name for f in fields(cls) if f.name not in override]
    return cls(**{name: getattr(row, name) for name in names}, **override)


def _jsonable(value: Any) -> Any:
    """A JSON-safe copy (unknown objects become strings)."""
    if value is None:
        return None
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.loads(json.dumps(value, default=str))


class Run(Base):
    """One run: an evaluation, a demo collection, a sleep-time pass, ..."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_new_id)
    name: Mapped[str] = mapped_column(String(200), default="", server_default="")
    kind: Mapped[str] = mapped_column(String(50), default="", server_default="")
    config: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow, index=True)


class Episode(Base):
    """One episode of a run."""

    __tablename__ = "episodes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_new_id)
    run_id: Mapped[str] = mapped_column(
        String(32),
        ForeignKey("runs.id", ondelete="CASCADE", name="fk_episodes_run_id"),
        index=True,
    )
    task_id: Mapped[str] = mapped_column(String(300), index=True)
    env: Mapped[str] = mapped_column(String(100), default="", server_default="")
    split: Mapped[str] = mapped_column(String(20), default="", server_default="")
    status: Mapped[str] = mapped_column(String(20), default="running", server_default="running")
    success: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    n_steps: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)


class ModelCall(Base):
    """One model call (``kind`` generate or score), failed ones included."""

    __tablename__ = "model_calls"

    id: Mapped[int] = mapped_column(BIGINT, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(
        String(32),
        ForeignKey("runs.id", ondelete="CASCADE", name="fk_model_calls_run_id"),
        index=True,
    )
    episode_id: Mapped[str | None] = mapped_column(
        String(32),
        ForeignKey("episodes.id", ondelete="CASCADE", name="fk_model_calls_episode_id"),
        nullable=True,
        index=True,
    )
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    role: Mapped[str] = mapped_column(String(50))
    kind: Mapped[str] = mapped_column(String(20), default="generate", server_default="generate")
    model: Mapped[str] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cached_prompt_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    latency_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    ok: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    meta: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class ToolCall(Base):
    """One tool or environment call, with an optional price."""

    __tablename__ = "tool_calls"

    id: Mapped[int] = mapped_column(BIGINT, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(
        String(32),
        ForeignKey("runs.id", ondelete="CASCADE", name="fk_tool_calls_run_id"),
        index=True,
    )
    episode_id: Mapped[str | None] = mapped_column(
        String(32),
        ForeignKey("episodes.id", ondelete="CASCADE", name="fk_tool_calls_episode_id"),
        nullable=True,
        index=True,
    )
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tool: Mapped[str] = mapped_column(String(200))
    latency_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    ok: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    meta: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


