"""Sleep-time compute: contexts, learned contexts (idempotency key), queries.

Revision ID: 0003_sleeptime
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_sleeptime"
down_revision = "0001"
branch_labels = ("sleeptime",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sleep_contexts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("kind", sa.String(32), nullable=False, server_default="document"),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("predictability", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_sleep_contexts_content_hash", "sleep_contexts", ["content_hash"])
    op.create_table(
        "sleep_learned_contexts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "context_id",
            sa.String(32),
            sa.ForeignKey("sleep_contexts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("context_revision", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("text", sa.Text(), nullable=False, server_default=""),
        sa.Column("qa", sa.JSON(), nullable=False),
        sa.Column("rounds", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("cost_usd", sa.Float(), nullable=False, server_default="0"),
        sa.Column("stop_reason", sa.String(32), nullable=False, server_default=""),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint(
            "context_id", "content_hash", "config_hash", name="uq_sleep_learned_key"
        ),
    )
    op.create_index(
        "ix_sleep_learned_contexts_context_id", "sleep_learned_contexts", ["context_id"]
    )
    op.create_table(
        "sleep_queries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "context_id",
            sa.String(32),
            sa.ForeignKey("sleep_contexts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False, server_default=""),
        sa.Column("budget", sa.String(16), nullable=False, server_default="mid"),
        sa.Column("mode", sa.String(16), nullable=False, server_default="with"),
        sa.Column("learned_id", sa.Integer(), nullable=True),
        sa.Column("learned_status", sa.String(16), nullable=False, server_default="missing"),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("cost_usd", sa.Float(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_sleep_queries_context_id", "sleep_queries", ["context_id"])


def downgrade() -> None:
    op.drop_index("ix_sleep_queries_context_id", table_name="sleep_queries")
    op.drop_table("sleep_queries")
    op.drop_index("ix_sleep_learned_contexts_context_id", table_name="sleep_learned_contexts")
    op.drop_table("sleep_learned_contexts")
    op.drop_index("ix_sleep_contexts_content_hash", table_name="sleep_contexts")
    op.drop_table("sleep_contexts")
