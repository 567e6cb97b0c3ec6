"""ledger: runs, episodes, model_calls, tool_calls

Revision ID: 0001
Revises:
Create Date: 2026-11-28

Other subsystems branch from here (``down_revision = "0001"``); nightowl always
upgrades to ``heads``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("kind", sa.String(50), nullable=False, server_default=""),
        sa.Column("config", sa.JSON(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_runs_created_at", "runs", ["created_at"])
    op.create_table(
        "episodes",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "run_id",
            sa.String(32),
            sa.ForeignKey("runs.id", ondelete="CASCADE", name="fk_episodes_run_id"),
            nullable=False,
        ),
        sa.Column("task_id", sa.String(300), nullable=False),
        sa.Column("env", sa.String(100), nullable=False, server_default=""),
        sa.Column("split", sa.String(20), nullable=False, server_default=""),
        sa.Column("status", sa.String(20), nullable=False, server_default="running"),
        sa.Column("success", sa.Boolean(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("n_steps", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=True),
    )
    op.create_index("ix_episodes_run_id", "episodes", ["run_id"])
    op.create_index("ix_episodes_task_id", "episodes", ["task_id"])
    op.create_table(
        "model_calls",
        sa.Column("id", _BIGINT, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id",
            sa.String(32),
            sa.ForeignKey("runs.id", ondelete="CASCADE", name="fk_model_calls_run_id"),
            nullable=False,
        ),
        sa.Column(
            "episode_id",
            sa.String(32),
            sa.ForeignKey("episodes.id", ondelete="CASCADE", name="fk_model_calls_episode_id"),
            nullable=True,
        ),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("role", sa.String(50), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False, server_default="generate"),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("cached_prompt_tokens", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("latency_s", sa.Float(), nullable=False, server_default="0"),
        sa.Column("cost_usd", sa.Float(), nullable=False, server_default="0"),
        sa.Column("ok", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("meta", sa.JSON(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_model_calls_run_id", "model_calls", ["run_id"])
    op.create_index("ix_model_calls_episode_id", "model_calls", ["episode_id"])
    op.create_table(
        "tool_calls",
        sa.Column("id", _BIGINT, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id",
            sa.String(32),
            sa.ForeignKey("runs.id", ondelete="CASCADE", name="fk_tool_calls_run_id"),
            nullable=False,
        ),
        sa.Column(
            "episode_id",
            sa.String(32),
            sa.ForeignKey("episodes.id", ondelete="CASCADE", name="fk_tool_calls_episode_id"),
            nullable=True,
        ),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("tool", sa.String(200), nullable=False),
        sa.Column("latency_s", sa.Float(), nullable=False, server_default="0"),
        sa.Column("cost_usd", sa.Float(), nullable=False, server_default="0"),
        sa.Column("ok", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("meta", sa.JSON(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_tool_calls_run_id", "tool_calls", ["run_id"])
    op.create_index("ix_tool_calls_episode_id", "tool_calls", ["episode_id"])


def downgrade() -> None:
    op.drop_table("tool_calls")
    op.drop_table("model_calls")
    op.drop_table("episodes")
    op.drop_table("runs")
