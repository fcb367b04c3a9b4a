"""A channel's analytics over its last 7, 28 or 90 days, for its owner (or an admin): the audience from
the per-minute rollups (`audience.py`), the streams, the chat and the new followers.

- concurrent viewers per minute, by transport (the minute's peak);
- peak concurrent: the largest minute (WebRTC and HLS peaks added: they may not coincide, so it can
  overstate by the viewers who switched within the minute);
- average concurrent: viewer-seconds over the seconds the channel was live;
- watch time: viewer-seconds, in all and by transport.
Every figure is a sum over rollup rows (one per stream, minute and transport), never over viewers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import distinct, func, select

from signaling.auth.roles import Principal
from signaling.channels.service import managed_channel
from signaling.db.database import Database
from signaling.db.models import AudienceMinute, ChatMessage, Follow, StreamSession

PERIODS = (7, 28, 90)


@dataclass(frozen=True, slots=True)
class MinuteAudience:
    minute: datetime
    webrtc: int
    hls: int
    webrtc_seconds: float
    hls_seconds: float


@dataclass(frozen=True, slots=True)
class Report:
    channel: str
    days: int
    since: datetime
    streams: int
    live_seconds: float
    peak_concurrent: int
    average_concurrent: float
    watch_seconds: dict[str, float]
    chat_messages: int
    chatters: int
    new_followers: int
    minutes: list[MinuteAudience] = field(default_factory=list)


class ChannelAnalytics:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def report(self, name: str, by: Principal, days: int) -> Report:
        now = datetime.fromtimestamp(self._clock(), timezone.utc)
        since = now - timedelta(days=days)
        async with self._db.session() as session:
            channel = await managed_channel(session, name, by, "see its analytics")
            rows = (await session.execute(
                select(AudienceMinute.minute, AudienceMinute.transport, func.sum(AudienceMinute.peak),
                       func.sum(AudienceMinute.viewer_seconds))
                .where(AudienceMinute.channel_id == channel.id, AudienceMinute.minute >= since)
                .group_by(AudienceMinute.minute, AudienceMinute.transport)
                .order_by(AudienceMinute.minute))).all()
            streams = (await session.execute(
                select(StreamSession.started_at, StreamSession.ended_at)
                .where(StreamSession.channel_id == channel.id,
                       (StreamSession.ended_at.is_(None)) | (StreamSession.ended_at >= since)))).all()
            chat = (await session.execute(
                select(func.count(ChatMessage.id), func.count(distinct(ChatMessage.user_id)))
                .where(ChatMessage.channel_id == channel.id, ChatMessage.created_at >= since))).one()
            followers = await session.scalar(
                select(func.count()).select_from(Follow).where(Follow.channel_id == channel.id, Follow.created_at >= since))
        by_minute: dict[datetime, dict[str, tuple[int, float]]] = {}
        for minute, transport, peak, seconds in rows:
            by_minute.setdefault(minute, {})[transport] = (int(peak or 0), float(seconds or 0.0))
        minutes = [MinuteAudience(minute, got.get("webrtc", (0, 0.0))[0], got.get("hls", (0, 0.0))[0],
                                  got.get("webrtc", (0, 0.0))[1], got.get("hls", (0, 0.0))[1])
                   for minute, got in sorted(by_minute.items())]
        live = sum(((ended or now) - max(started, since)).total_seconds() for started, ended in streams)
        watch = {"webrtc": sum(m.webrtc_seconds for m in minutes), "hls": sum(m.hls_seconds for m in minutes)}
        watch["total"] = watch["webrtc"] + watch["hls"]
        return Report(
            channel=channel.name, days=days, since=since, streams=len(streams), live_seconds=round(live, 1),
            peak_concurrent=max((m.webrtc + m.hls for m in minutes), default=0),
            average_concurrent=round(watch["total"] / live, 2) if live > 0 else 0.0,
            watch_seconds={k: round(v, 1) for k, v in watch.items()},
            chat_messages=int(chat[0]), chatters=int(chat[1]), new_followers=int(followers or 0), minutes=minutes)
