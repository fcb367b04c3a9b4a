"""chat: messages, moderators, bans, channel chat modes

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import signaling.db.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("chat_slow_mode", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("chat_followers_only", sa.Boolean(), server_default="0", nullable=False))
    op.create_table(
        "chat_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", signaling.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", signaling.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("deleted_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], name=op.f("fk_chat_messages_channel_id_channels"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_chat_messages_user_id_users"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["deleted_by"], ["users.id"], name=op.f("fk_chat_messages_deleted_by_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_messages")),
    )
    op.create_index("ix_chat_messages_channel_id_id", "chat_messages", ["channel_id", "id"], unique=False)
    op.create_index("ix_chat_messages_channel_user", "chat_messages", ["channel_id", "user_id", "id"], unique=False)
    op.create_table(
        "channel_moderators",
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", signaling.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], name=op.f("fk_channel_moderators_channel_id_channels"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_channel_moderators_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("channel_id", "user_id", name=op.f("pk_channel_moderators")),
    )
    op.create_table(
        "chat_bans",
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("until", signaling.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", signaling.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], name=op.f("fk_chat_bans_channel_id_channels"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_chat_bans_user_id_users"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name=op.f("fk_chat_bans_created_by_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("channel_id", "user_id", name=op.f("pk_chat_bans")),
    )


def downgrade() -> None:
    op.drop_table("chat_bans")
    op.drop_table("channel_moderators")
    op.drop_index("ix_chat_messages_channel_user", table_name="chat_messages")
    op.drop_index("ix_chat_messages_channel_id_id", table_name="chat_messages")
    op.drop_table("chat_messages")
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("chat_followers_only")
        batch.drop_column("chat_slow_mode")
