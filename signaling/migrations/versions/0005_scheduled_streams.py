"""scheduled streams

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import signaling.db.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scheduled_streams",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=140), nullable=False),
        sa.Column("starts_at", signaling.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expected_minutes", sa.Integer(), nullable=False),
        sa.Column("stream_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", signaling.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], name=op.f("fk_scheduled_streams_channel_id_channels"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduled_streams")),
    )
    op.create_index("ix_scheduled_streams_starts", "scheduled_streams", ["starts_at"], unique=False)
    op.create_index("ix_scheduled_streams_channel_starts", "scheduled_streams", ["channel_id", "starts_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_scheduled_streams_channel_starts", table_name="scheduled_streams")
    op.drop_index("ix_scheduled_streams_starts", table_name="scheduled_streams")
    op.drop_table("scheduled_streams")
