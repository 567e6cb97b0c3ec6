"""SQL tables of the demo memory: every step of every episode, and which episodes are demos.

* ``steps`` - one row per step of any episode (student, teacher, oracle, ...), so that a
  run can be replayed and audited: observation, action, the model's reasoning when it
  gave one, reward, score, done, who acted, the valid actions when known, free meta.
* ``demos`` - the episodes the student may learn from in context (one row per demo
  episode): goal, env, task, source ("collect" or "escalation"), and the goal's
  embedding. ``id`` is an integer surrogate key so that FAISS (int64 ids) can index
  demos; ``episode_id`` is unique.
* ``demo_steps`` - the steps that belong to a demo, with their two step-level embeddings
  (observation key, goal+history key). A demo may cover only some steps of its
  episode (an escalation demo keeps the teacher's steps).

Embeddings are stored in SQL as float32 bytes together with the model name and a SHA-1
of the exact text that was embedded. SQL stays the single source of truth: FAISS
indexes are caches that can be rebuilt without re-running the model (fast), a changed
text is detected by its hash, and a different embedding model triggers re-embedding.

Deletes cascade: runs -> episodes -> steps -> demo_steps, episodes -> demos -> demo_steps.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

import nightowl.ledger  # noqa: F401 - registers `episodes`, which our foreign keys reference
from nightowl.db import Base
from nightowl.storage import BIGINT, utcnow

IN_CHUNK = 900  # ids per IN (...) list: below SQLite's default variable limit


class StepRow(Base):
    """One step of any episode (the audit/replay record)."""

    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("episode_id", "idx", name="uq_steps_episode_idx"),)

    id: Mapped[int] = mapped_column(BIGINT, primary_key=True, autoincrement=True)
    episode_id: Mapped[str] = mapped_column(
        String(32),
        ForeignKey("episodes.id", ondelete="CASCADE", name="fk_steps_episode_id"),
        index=True,
    )
    idx: Mapped[int] = mapped_column(Integer)
    observation: Mapped[str] = mapped_column(Text, default="")
    action: Mapped[str] = mapped_column(Text, default="")
    reasoning: Mapped[str | None] = mapped_column(Text, nullable=True)
    reward: Mapped[float] = mapped_column(Float, default=0.0)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    actor: Mapped[str] = mapped_column(String(32), default="")
    valid_actions: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DemoRow(Base):
    """An episode the student may be shown in context."""

    __tablename__ = "demos"

    id: Mapped[int] = mapped_column(BIGINT, primary_key=True, autoincrement=True)
    episode_id: Mapped[str] = mapped_column(
        String(32),
        ForeignKey("episodes.id", ondelete="CASCADE", name="fk_demos_episode_id"),
        unique=True,
    )
    goal: Mapped[str] = mapped_column(Text, default="")
    env: Mapped[str] = mapped_column(String(100), default="")
    task_id: Mapped[str] = mapped_column(String(300), default="", index=True)
    source: Mapped[str] = mapped_column(String(20), default="collect")
    n_steps: Mapped[int] = mapped_column(Integer, default=0)
    embed_model: Mapped[str] = mapped_column(String(200), default="")
    goal_sha: Mapped[str] = mapped_column(String(40), default="")
    goal_vec: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DemoStepRow(Base):
    """A step that belongs to a demo, with its step-level embeddings."""

    __tablename__ = "demo_steps"

    step_id: Mapped[int] = mapped_column(
        BIGINT,
        ForeignKey("steps.id", ondelete="CASCADE", name="fk_demo_steps_step_id"),
        primary_key=True,
        autoincrement=False,
    )
    demo_id: Mapped[int] = mapped_column(
        BIGINT,
        ForeignKey("demos.id", ondelete="CASCADE", name="fk_demo_steps_demo_id"),
        index=True,
    )
    embed_model: Mapped[str] = mapped_column(String(200), default="")
    obs_sha: Mapped[str] = mapped_column(String(40), default="")
    obs_vec: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    hist_sha: Mapped[str] = mapped_column(String(40), default="")
    hist_vec: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
