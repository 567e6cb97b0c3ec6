"""chat_demos.episode_id: a chat demo is a one-step ledger episode (NULL for older rows)

Revision ID: 0006_chat_demo_episodes
Revises: 0004_chat
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_chat_demo_episodes"
down_revision = "0004_chat"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chat_demos", sa.Column("episode_id", sa.String(32), nullable=True))
    op.create_index("ix_chat_demos_episode_id", "chat_demos", ["episode_id"])


def downgrade() -> None:
    op.drop_index("ix_chat_demos_episode_id", table_name="chat_demos")
    with op.batch_alter_table("chat_demos") as batch:
        batch.drop_column("episode_id")
