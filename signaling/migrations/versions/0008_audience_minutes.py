"""analytics: each stream's audience per minute and transport (peak, viewer-seconds)

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import signaling.db.types

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UtcDateTime = signaling.db.types.UtcDateTime


def upgrade() -> None:
    op.create_table(
        "audience_minutes",
        sa.Column("stream_id", sa.String(length=32), nullable=False),
        sa.Column("minute", UtcDateTime(timezone=True), nullable=False),
        sa.Column("transport", sa.String(length=8), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("peak", sa.Integer(), nullable=False),
        sa.Column("viewer_seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], name=op.f("fk_audience_minutes_channel_id_channels"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["stream_id"], ["stream_sessions.id"],
                                name=op.f("fk_audience_minutes_stream_id_stream_sessions"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("stream_id", "minute", "transport", name=op.f("pk_audience_minutes")),
    )
    op.create_index("ix_audience_minutes_channel_minute", "audience_minutes", ["channel_id", "minute"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audience_minutes_channel_minute", table_name="audience_minutes")
    op.drop_table("audience_minutes")
