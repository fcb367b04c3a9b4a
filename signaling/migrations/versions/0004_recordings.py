"""recordings, and the channel's recording settings

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import signaling.db.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("record_streams", sa.Boolean(), server_default="0", nullable=False))
        batch.add_column(sa.Column("recording_retention_days", sa.Integer(), server_default="0", nullable=False))
    op.create_table(
        "recordings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("stream_id", sa.String(length=32), nullable=False),
        sa.Column("node", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=140), nullable=False),
        sa.Column("started_at", signaling.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", signaling.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("video_codec", sa.String(length=16), nullable=False),
        sa.Column("audio_codec", sa.String(length=16), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("storage_key", sa.String(length=512), nullable=False),
        sa.Column("thumbnail_key", sa.String(length=512), nullable=False),
        sa.Column("error", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], name=op.f("fk_recordings_channel_id_channels"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recordings")),
    )
    op.create_index("ix_recordings_channel_started", "recordings", ["channel_id", "started_at"], unique=False)
    op.create_index("ix_recordings_state_node", "recordings", ["state", "node"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_recordings_state_node", table_name="recordings")
    op.drop_index("ix_recordings_channel_started", table_name="recordings")
    op.drop_table("recordings")
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("recording_retention_days")
        batch.drop_column("record_streams")
