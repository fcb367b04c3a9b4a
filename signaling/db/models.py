"""The tables. Change them only together with a migration under signaling/migrations/versions/."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Text, UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from signaling.db.types import UtcDateTime, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    display_name: Mapped[str] = mapped_column(String(64), default="")
    bio: Mapped[str] = mapped_column(Text, default="")
    # How this user hears of the channels it follows (each channel's bell picks what about).
    notify_in_app: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    notify_push: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    notify_email: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    channel: Mapped[Channel] = relationship(back_populates="owner", uselist=False, lazy="raise")


class Channel(Base):
    __tablename__ = "channels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(140), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    avatar_url: Mapped[str] = mapped_column(String(512), default="")
    is_live: Mapped[bool] = mapped_column(Boolean, default=False)
    live_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    viewer_count: Mapped[int] = mapped_column(Integer, default=0)
    stream_key_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    stream_key_hint: Mapped[str] = mapped_column(String(16), default="")
    stream_key_created_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    chat_slow_mode: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # seconds between posts
    chat_followers_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    record_streams: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    recording_retention_days: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # 0: keep
    live_notified_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # the last go-live notification (cooldown)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    owner: Mapped[User] = relationship(back_populates="channel", lazy="raise")


class Follow(Base):
    __tablename__ = "follows"

    follower_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    notify: Mapped[str] = mapped_column(String(8), default="all", server_default="all")  # the bell: all, live, none

    __table_args__ = (Index("ix_follows_channel_id", "channel_id"),)


class RefreshToken(Base):
    """One refresh token of a login session; every rotation adds a row to the same family."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    family_id: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_refresh_tokens_family_id", "family_id"),
        Index("ix_refresh_tokens_user_id", "user_id"),
    )


class OidcIdentity(Base):
    """A user's account at an OpenID Connect provider."""

    __tablename__ = "oidc_identities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(254), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("provider", "subject", name="uq_oidc_identities_provider_subject"),
        Index("ix_oidc_identities_user_id", "user_id"),
    )


class StreamSession(Base):
    """One stream of a channel, from the first packet of a publisher to its end (takeovers continue it)."""

    __tablename__ = "stream_sessions"
    __table_args__ = (Index("ix_stream_sessions_channel_started", "channel_id", "started_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    node: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_reason: Mapped[str] = mapped_column(String(64), default="")
    video_codec: Mapped[str] = mapped_column(String(16), default="")
    audio_codec: Mapped[str] = mapped_column(String(16), default="")
    viewers: Mapped[int] = mapped_column(Integer, default=0)
    peak_viewers: Mapped[int] = mapped_column(Integer, default=0)


class AudienceMinute(Base):
    """How many watched a stream in one minute over one transport (webrtc, hls): the minute's peak and
    its viewer-seconds. Analytics read these rollups, one row per stream, minute and transport, never a
    row per viewer."""

    __tablename__ = "audience_minutes"
    __table_args__ = (Index("ix_audience_minutes_channel_minute", "channel_id", "minute"),)

    stream_id: Mapped[str] = mapped_column(ForeignKey("stream_sessions.id", ondelete="CASCADE"), primary_key=True)
    minute: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    transport: Mapped[str] = mapped_column(String(8), primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    peak: Mapped[int] = mapped_column(Integer, default=0)
    viewer_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class ViewerSession(Base):
    """One viewing of a stream, from the player's start to its end, over one transport; what its player
    said of how it went (quality of experience). Kept for `VIEWER_SESSION_RETENTION_DAYS`; the analytics
    of days gone read `viewing_days`. No address is stored: a viewer is a user id, or the random id its
    player made for the page (an HLS player that says nothing: a salted hash of its requests).

    Its writers touch their own columns: the node that serves a WebRTC viewer writes the times, the
    player writes the quality figures, both as upserts on the id, in whichever order they come."""

    __tablename__ = "viewer_sessions"
    __table_args__ = (Index("ix_viewer_sessions_channel_started", "channel_id", "started_at", "viewer"),
                      Index("ix_viewer_sessions_started", "started_at"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    stream_id: Mapped[str] = mapped_column(String(32), default="")
    transport: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(8))  # "node", "player" or "requests": who saw it
    viewer: Mapped[str] = mapped_column(String(72))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)  # how long it lasted, as far as seen
    # The player's figures, cumulative over the session (each beacon replaces the last one's).
    watch_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    startup_ms: Mapped[int | None] = mapped_column(Integer)
    stalls: Mapped[int] = mapped_column(Integer, default=0)
    stall_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    dropped_frames: Mapped[int] = mapped_column(Integer, default=0)
    renditions: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)  # rendition -> seconds shown


class ViewingDay(Base):
    """A channel's viewing sessions of one day (UTC, by start) over one transport, summed, and the day's
    audience from the per-minute rollups: what the analytics of past days read instead of the sessions
    and minutes. Recomputed while the day's sessions are kept."""

    __tablename__ = "viewing_days"

    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    transport: Mapped[str] = mapped_column(String(8), primary_key=True)
    sessions: Mapped[int] = mapped_column(Integer, default=0)
    viewers: Mapped[int] = mapped_column(Integer, default=0)  # distinct that day (days do not add up...)
    viewer_sketch: Mapped[bytes | None] = mapped_column(LargeBinary)  # ...their HyperLogLog sketches do
    session_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    player_sessions: Mapped[int] = mapped_column(Integer, default=0)  # sessions whose player told its figures
    watch_seconds: Mapped[float] = mapped_column(Float, default=0.0)  # ...and their figures, summed
    startup_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    startups: Mapped[int] = mapped_column(Integer, default=0)
    stalls: Mapped[int] = mapped_column(BigInteger, default=0)
    stall_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    latencies: Mapped[int] = mapped_column(Integer, default=0)
    dropped_frames: Mapped[int] = mapped_column(BigInteger, default=0)
    renditions: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    # The day's audience from `audience_minutes`: its largest minute, and its viewer-seconds.
    peak: Mapped[int] = mapped_column(Integer, default=0)  # this transport's
    peak_total: Mapped[int] = mapped_column(Integer, default=0)  # both transports' (the same on both rows)
    audience_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class ChatMessage(Base):
    """One chat post. The id orders a channel's conversation; deleted posts keep their row."""

    __tablename__ = "chat_messages"
    __table_args__ = (
        Index("ix_chat_messages_channel_id_id", "channel_id", "id"),
        Index("ix_chat_messages_channel_user", "channel_id", "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    deleted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class ChannelModerator(Base):
    """A user the channel's owner appointed to keep order in its chat."""

    __tablename__ = "channel_moderators"

    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ChatBan(Base):
    """A user kept out of a channel's chat: until `until` (a time-out), or for good when it is null."""

    __tablename__ = "chat_bans"

    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reason: Mapped[str] = mapped_column(String(200), default="")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Recording(Base):
    """One recording of a stream (a stream may have several: recording can stop and start again).

    state: recording -> processing -> ready, or failed; `recording` rows of a node that died are
    finalized from their spool when it starts again.
    """

    __tablename__ = "recordings"
    __table_args__ = (
        Index("ix_recordings_channel_started", "channel_id", "started_at"),
        Index("ix_recordings_state_node", "state", "node"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    stream_id: Mapped[str] = mapped_column(String(32))
    node: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default="recording")
    title: Mapped[str] = mapped_column(String(140), default="")
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    duration: Mapped[float] = mapped_column(Float, default=0.0)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    video_codec: Mapped[str] = mapped_column(String(16), default="")
    audio_codec: Mapped[str] = mapped_column(String(16), default="")
    width: Mapped[int] = mapped_column(Integer, default=0)
    height: Mapped[int] = mapped_column(Integer, default=0)
    storage_key: Mapped[str] = mapped_column(String(512), default="")
    thumbnail_key: Mapped[str] = mapped_column(String(512), default="")
    error: Mapped[str] = mapped_column(String(256), default="")


class ScheduledStream(Base):
    """A stream a broadcaster says is coming: shown on the channel page, in the directory's Upcoming and
    in the channel's iCalendar feed. Going live in its window links the stream to it (`stream_id`)."""

    __tablename__ = "scheduled_streams"
    __table_args__ = (Index("ix_scheduled_streams_starts", "starts_at"),
                      Index("ix_scheduled_streams_channel_starts", "channel_id", "starts_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(140))
    starts_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expected_minutes: Mapped[int] = mapped_column(Integer)
    stream_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Notification(Base):
    """Something a user is told in the app (the bell): a followed channel went live, a stream is coming."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user_id_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(String(500), default="")
    url: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class OutboxJob(Base):
    """Work an event leaves for the notification worker, written in the event's own transaction.

    A worker leases a due job (`locked_until`), does it, and deletes it; a failure puts it back with a
    later `due_at`; one that keeps failing is kept with `failed_at` set, for an operator to see.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_failed_at_due_at", "failed_at", "due_at"), Index("ix_outbox_key", "key"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str | None] = mapped_column(String(96))  # what the job is about, to find (or not repeat) it
    payload: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    locked_by: Mapped[str] = mapped_column(String(64), default="")
    last_error: Mapped[str] = mapped_column(String(300), default="")
    failed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Webhook(Base):
    """A URL a channel's owner wants told of its events (go-live, stream ended, new follower)."""

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_channel_id", "channel_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(512))
    secret: Mapped[str] = mapped_column(String(255))  # sealed (signaling.auth.sealing)
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    format: Mapped[str] = mapped_column(String(16), default="json")  # json, or discord
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_status: Mapped[int] = mapped_column(Integer, default=0)  # the last delivery's HTTP status (0: none, or no answer)
    last_error: Mapped[str] = mapped_column(String(300), default="")
    last_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class PushSubscription(Base):
    """A browser's Web Push subscription (RFC 8030): where to send, and the keys to encrypt for it."""

    __tablename__ = "push_subscriptions"
    __table_args__ = (Index("ix_push_subscriptions_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    endpoint: Mapped[str] = mapped_column(String(1024), unique=True)
    p256dh: Mapped[str] = mapped_column(String(128))
    auth: Mapped[str] = mapped_column(String(255))  # a secret of the browser's: sealed (p256dh is a public key)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_success_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class SiteSecret(Base):
    """A key the whole installation shares, made by the first process that needs it (the VAPID key); sealed."""

    __tablename__ = "site_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
