"""analytics: viewing sessions with their players' quality figures, and daily sums of them and the audience

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import signaling.db.types

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UtcDateTime = signaling.db.types.UtcDateTime


def upgrade() -> None:
    op.create_table(
        "viewer_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("stream_id", sa.String(length=32), nullable=False),
        sa.Column("transport", sa.String(length=8), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("viewer", sa.String(length=72), nullable=False),
        sa.Column("started_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("watch_seconds", sa.Float(), nullable=False),
        sa.Column("startup_ms", sa.Integer(), nullable=True),
        sa.Column("stalls", sa.Integer(), nullable=False),
        sa.Column("stall_seconds", sa.Float(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("dropped_frames", sa.Integer(), nullable=False),
        sa.Column("renditions", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], name=op.f("fk_viewer_sessions_channel_id_channels"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_viewer_sessions")),
    )
    op.create_index("ix_viewer_sessions_channel_started", "viewer_sessions", ["channel_id", "started_at", "viewer"],
                    unique=False)
    op.create_index("ix_viewer_sessions_started", "viewer_sessions", ["started_at"], unique=False)
    op.create_table(
        "viewing_days",
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("day", UtcDateTime(timezone=True), nullable=False),
        sa.Column("transport", sa.String(length=8), nullable=False),
        sa.Column("sessions", sa.Integer(), nullable=False),
        sa.Column("viewers", sa.Integer(), nullable=False),
        sa.Column("viewer_sketch", sa.LargeBinary(), nullable=True),
        sa.Column("session_seconds", sa.Float(), nullable=False),
        sa.Column("player_sessions", sa.Integer(), nullable=False),
        sa.Column("watch_seconds", sa.Float(), nullable=False),
        sa.Column("startup_ms_sum", sa.Float(), nullable=False),
        sa.Column("startups", sa.Integer(), nullable=False),
        sa.Column("stalls", sa.BigInteger(), nullable=False),
        sa.Column("stall_seconds", sa.Float(), nullable=False),
        sa.Column("latency_ms_sum", sa.Float(), nullable=False),
        sa.Column("latencies", sa.Integer(), nullable=False),
        sa.Column("dropped_frames", sa.BigInteger(), nullable=False),
        sa.Column("renditions", sa.JSON(), nullable=False),
        sa.Column("peak", sa.Integer(), nullable=False),
        sa.Column("peak_total", sa.Integer(), nullable=False),
        sa.Column("audience_seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], name=op.f("fk_viewing_days_channel_id_channels"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("channel_id", "day", "transport", name=op.f("pk_viewing_days")),
    )


def downgrade() -> None:
    op.drop_table("viewing_days")
    op.drop_index("ix_viewer_sessions_started", table_name="viewer_sessions")
    op.drop_index("ix_viewer_sessions_channel_started", table_name="viewer_sessions")
    op.drop_table("viewer_sessions")
