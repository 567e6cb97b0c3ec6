"""memory: steps, demos, demo_steps

Revision ID: 0002_memory
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_memory"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = ("memory",)
depends_on: str | Sequence[str] | None = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "steps",
        sa.Column("id", _BIGINT, primary_key=True, autoincrement=True),
        sa.Column(
            "episode_id",
            sa.String(32),
            sa.ForeignKey("episodes.id", ondelete="CASCADE", name="fk_steps_episode_id"),
            nullable=False,
        ),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("observation", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("reasoning", sa.Text(), nullable=True),
        sa.Column("reward", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.String(32), nullable=False),
        sa.Column("valid_actions", sa.JSON(), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("episode_id", "idx", name="uq_steps_episode_idx"),
    )
    op.create_index("ix_steps_episode_id", "steps", ["episode_id"])
    op.create_table(
        "demos",
        sa.Column("id", _BIGINT, primary_key=True, autoincrement=True),
        sa.Column(
            "episode_id",
            sa.String(32),
            sa.ForeignKey("episodes.id", ondelete="CASCADE", name="fk_demos_episode_id"),
            nullable=False,
            unique=True,
        ),
        sa.Column("goal", sa.Text(), nullable=False),
        sa.Column("env", sa.String(100), nullable=False),
        sa.Column("task_id", sa.String(300), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("n_steps", sa.Integer(), nullable=False),
        sa.Column("embed_model", sa.String(200), nullable=False),
        sa.Column("goal_sha", sa.String(40), nullable=False),
        sa.Column("goal_vec", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_demos_task_id", "demos", ["task_id"])
    op.create_table(
        "demo_steps",
        sa.Column(
            "step_id",
            _BIGINT,
            sa.ForeignKey("steps.id", ondelete="CASCADE", name="fk_demo_steps_step_id"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column(
            "demo_id",
            _BIGINT,
            sa.ForeignKey("demos.id", ondelete="CASCADE", name="fk_demo_steps_demo_id"),
            nullable=False,
        ),
        sa.Column("embed_model", sa.String(200), nullable=False),
        sa.Column("obs_sha", sa.String(40), nullable=False),
        sa.Column("obs_vec", sa.LargeBinary(), nullable=True),
        sa.Column("hist_sha", sa.String(40), nullable=False),
        sa.Column("hist_vec", sa.LargeBinary(), nullable=True),
    )
    op.create_index("ix_demo_steps_demo_id", "demo_steps", ["demo_id"])


def downgrade() -> None:
    op.drop_table("demo_steps")
    op.drop_table("demos")
    op.drop_table("steps")
