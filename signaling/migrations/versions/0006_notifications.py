"""notifications: the outbox, in-app notifications, webhooks, follow bells and account preferences

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import signaling.db.types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UtcDateTime = signaling.db.types.UtcDateTime


def upgrade() -> None:
    with op.batch_alter_table("users") as users:
        users.add_column(sa.Column("notify_in_app", sa.Boolean(), nullable=False, server_default="1"))
        users.add_column(sa.Column("notify_push", sa.Boolean(), nullable=False, server_default="1"))
        users.add_column(sa.Column("notify_email", sa.Boolean(), nullable=False, server_default="0"))
    with op.batch_alter_table("channels") as channels:
        channels.add_column(sa.Column("live_notified_at", UtcDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("follows") as follows:
        follows.add_column(sa.Column("notify", sa.String(length=8), nullable=False, server_default="all"))
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=True),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.String(length=500), nullable=False),
        sa.Column("url", sa.String(length=512), nullable=False),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("read_at", UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_notifications_user_id_users"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], name=op.f("fk_notifications_channel_id_channels"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index("ix_notifications_user_id_id", "notifications", ["user_id", "id"], unique=False)
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=96), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("due_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", UtcDateTime(timezone=True), nullable=True),
        sa.Column("locked_by", sa.String(length=64), nullable=False),
        sa.Column("last_error", sa.String(length=300), nullable=False),
        sa.Column("failed_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index("ix_outbox_failed_at_due_at", "outbox", ["failed_at", "due_at"], unique=False)
    op.create_index("ix_outbox_key", "outbox", ["key"], unique=False)
    op.create_table(
        "webhooks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=512), nullable=False),
        sa.Column("secret", sa.String(length=64), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=300), nullable=False),
        sa.Column("last_attempt_at", UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], name=op.f("fk_webhooks_channel_id_channels"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
    )
    op.create_index("ix_webhooks_channel_id", "webhooks", ["channel_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_webhooks_channel_id", table_name="webhooks")
    op.drop_table("webhooks")
    op.drop_index("ix_outbox_key", table_name="outbox")
    op.drop_index("ix_outbox_failed_at_due_at", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_notifications_user_id_id", table_name="notifications")
    op.drop_table("notifications")
    with op.batch_alter_table("follows") as follows:
        follows.drop_column("notify")
    with op.batch_alter_table("channels") as channels:
        channels.drop_column("live_notified_at")
    with op.batch_alter_table("users") as users:
        users.drop_column("notify_email")
        users.drop_column("notify_push")
        users.drop_column("notify_in_app")
