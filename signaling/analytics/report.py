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
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from signaling.analytics.viewer_sketches import count_viewers
from signaling.analytics.viewing import DAY, add_renditions, day_of, day_sums, of, partial_days
from signaling.auth.roles import Principal
from signaling.channels.service import managed_channel
from signaling.db.database import Database
from signaling.db.models import AudienceMinute, Channel, ChatMessage, Follow, StreamSession, ViewerSession, ViewingDay
from signaling.errors import NotFound

PERIODS = (7, 28, 90)
MINUTES_UP_TO_DAYS = 7  # periods up to this long are drawn per minute; longer ones per day


@dataclass(frozen=True, slots=True)
class MinuteAudience:
    minute: datetime
    webrtc: int
    hls: int
    webrtc_seconds: float
    hls_seconds: float
    peak: int = -1  # viewers at the point's busiest minute, transports together (-1: webrtc + hls)

    @property
    def concurrent(self) -> int:
        return self.peak if self.peak >= 0 else self.webrtc + self.hls


@dataclass(frozen=True, slots=True)
class Viewing:
    """The period's viewing sessions: how many, by whom, and how they went (from the players that tell)."""

    sessions: dict[str, int]  # by transport
    viewers: int  # distinct (signed-in users, and anonymous players by their page's random id)
    average_session_seconds: float
    startup_ms: dict[str, float | None]  # the average time to the first frame, by transport
    rebuffering: float | None  # the share of time spent waiting for data
    latency_ms: dict[str, float | None]  # the average delay behind the broadcaster, by transport
    dropped_frames: int
    renditions: dict[str, float]  # the share of time per rendition


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
    viewing: Viewing
    minutes: list[MinuteAudience] = field(default_factory=list)  # per minute, or per day (`by_day`)
    by_day: bool = False
    stream: str | None = None  # one stream's report: its id, and its end (None while live)
    until: datetime | None = None


class ChannelAnalytics:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def report(self, name: str, by: Principal, days: int) -> Report:
        """Channel `name`'s report, for its owner or an admin (404, 403 otherwise)."""
        async with self._db.session() as session:
            channel = await managed_channel(session, name, by, "see its analytics")
        return await self._report(channel.name, channel.id, days)

    async def owned(self, name: str, by: Principal) -> str:
        """Channel `name`'s own spelling, if `by` owns it or is an admin (404, 403 otherwise)."""
        async with self._db.session() as session:
            return (await managed_channel(session, name, by, "see its analytics")).name

    async def site(self, days: int, busiest: int = 10) -> tuple[Report, list[tuple[str, float, int]]]:
        """The whole site's report (for admins), and its busiest channels: (name, seconds watched, peak)."""
        report = await self._report("", None, days)
        now = datetime.fromtimestamp(self._clock(), timezone.utc)
        first_whole, today, partial = partial_days(report.since, now)
        a, d = AudienceMinute, ViewingDay
        totals: dict[int, tuple[float, int]] = {}  # channel id -> (seconds watched, peak)

        def add(rows: Any) -> None:
            for channel_id, seconds, peak in rows:
                had = totals.get(channel_id, (0.0, 0))
                totals[channel_id] = (had[0] + float(seconds or 0.0), max(had[1], int(peak or 0)))

        async with self._db.session() as session:
            for start, end in partial:
                if start < end:  # the partial first day and today, from their minutes
                    per_minute = (select(a.channel_id, func.sum(a.peak).label("peak"), func.sum(a.viewer_seconds).label("seconds"))
                                  .where(a.minute >= start, a.minute < end).group_by(a.channel_id, a.minute).subquery())
                    add((await session.execute(select(per_minute.c.channel_id, func.sum(per_minute.c.seconds),
                                                      func.max(per_minute.c.peak)).group_by(per_minute.c.channel_id))).all())
            per_day = (select(d.channel_id, func.max(d.peak_total).label("peak"), func.sum(d.audience_seconds).label("seconds"))
                       .where(d.day >= first_whole, d.day < today).group_by(d.channel_id, d.day).subquery())
            add((await session.execute(select(per_day.c.channel_id, func.sum(per_day.c.seconds), func.max(per_day.c.peak))
                                       .group_by(per_day.c.channel_id))).all())
            top = sorted(totals.items(), key=lambda item: -item[1][0])[:busiest]
            names = dict((await session.execute(select(Channel.id, Channel.name)
                                                .where(Channel.id.in_([c for c, _ in top])))).all()) if top else {}
        return report, [(names[c], round(seconds, 1), peak) for c, (seconds, peak) in top if c in names]

    async def _report(self, name: str, channel_id: int | None, days: int) -> Report:
        now = datetime.fromtimestamp(self._clock(), timezone.utc)
        since = now - timedelta(days=days)

        async with self._db.session() as session:
            minutes = await self._audience(session, channel_id, since, now, by_day=days > MINUTES_UP_TO_DAYS)
            streams = (await session.execute(
                select(StreamSession.started_at, StreamSession.ended_at)
                .where(*of(StreamSession.channel_id, channel_id),
                       (StreamSession.ended_at.is_(None)) | (StreamSession.ended_at >= since)))).all()
            chat = (await session.execute(
                select(func.count(ChatMessage.id), func.count(distinct(ChatMessage.user_id)))
                .where(*of(ChatMessage.channel_id, channel_id), ChatMessage.created_at >= since))).one()
            followers = await session.scalar(
                select(func.count()).select_from(Follow).where(*of(Follow.channel_id, channel_id), Follow.created_at >= since))
        live = sum(((ended or now) - max(started, since)).total_seconds() for started, ended in streams)
        return Report(
            channel=name, days=days, since=since, streams=len(streams), **_audience_figures(minutes, live),
            chat_messages=int(chat[0]), chatters=int(chat[1]), new_followers=int(followers or 0),
            viewing=await self._viewing(channel_id, since, now), minutes=minutes, by_day=days > MINUTES_UP_TO_DAYS)

    async def minutes(self, name: str, by: Principal, days: int) -> tuple[str, list[MinuteAudience]]:
        """Channel `name`'s audience per minute over the period (the CSV), for its owner or an admin."""
        async with self._db.session() as session:
            channel = await managed_channel(session, name, by, "see its analytics")
            now = datetime.fromtimestamp(self._clock(), timezone.utc)
            return channel.name, await self._audience(session, channel.id, now - timedelta(days=days), now, by_day=False)

    async def _audience(self, session: AsyncSession, channel_id: int | None, since: datetime, now: datetime,
                        by_day: bool) -> list[MinuteAudience]:
        """The audience per minute from `audience_minutes`; `by_day`: per day instead (each transport's
        busiest minute, and the busiest minute of both together), a channel's whole days from their
        sums (`viewing_days`) and the partial first day and today from their minutes. The site's days
        come from its minutes: channels' daily peaks happen at different minutes and do not add up."""
        a = AudienceMinute
        where = of(a.channel_id, channel_id)
        first_whole, today, spans = partial_days(since, now)
        if channel_id is None or not by_day:  # no whole day from the sums: every minute
            first_whole, spans = today, [(since, now + DAY)]
        per_minute: dict[datetime, dict[str, tuple[int, float]]] = {}
        for start, end in spans:
            if start >= end:
                continue
            for minute, transport, peak, seconds in (await session.execute(
                    select(a.minute, a.transport, func.sum(a.peak), func.sum(a.viewer_seconds))
                    .where(*where, a.minute >= start, a.minute < end)
                    .group_by(a.minute, a.transport))).all():
                per_minute.setdefault(minute, {})[transport] = (int(peak or 0), float(seconds or 0.0))
        if not by_day:
            return [_point(minute, got) for minute, got in sorted(per_minute.items())]
        per_day: dict[datetime, dict[str, tuple[int, float]]] = {}
        peaks: dict[datetime, int] = {}
        for minute, got in per_minute.items():  # a day's peak is its largest minute
            day = day_of(minute)
            bucket = per_day.setdefault(day, {})
            for transport, (peak, seconds) in got.items():
                had = bucket.get(transport, (0, 0.0))
                bucket[transport] = (max(had[0], peak), had[1] + seconds)
            peaks[day] = max(peaks.get(day, 0), sum(peak for peak, _ in got.values()))
        d = ViewingDay
        if channel_id is not None:
            for day, transport, peak, seconds, total in (await session.execute(
                    select(d.day, d.transport, d.peak, d.audience_seconds, d.peak_total)
                    .where(d.channel_id == channel_id, d.day >= first_whole, d.day < today))).all():
                per_day.setdefault(day, {})[transport] = (int(peak or 0), float(seconds or 0.0))
                peaks[day] = max(peaks.get(day, 0), int(total or 0))
        return [_point(day, got, peaks.get(day, 0)) for day, got in sorted(per_day.items())
                if any(p or s for p, s in got.values())]

    async def _viewing(self, channel_id: int | None, since: datetime, now: datetime) -> Viewing:
        """Whole days from their sums (`viewing_days`); the period's partial first day and today from
        the sessions themselves. Distinct viewers: the union of the whole days' sketches and the
        partial days' viewers (see `viewer_sketches`)."""
        first_whole, today, partial = partial_days(since, now)
        d, s = ViewingDay, ViewerSession
        async with self._db.session() as session:
            rows = [dict(row._mapping) for row in (await session.execute(
                select(d.transport, d.sessions, d.session_seconds, d.player_sessions, d.watch_seconds,
                       d.startup_ms_sum, d.startups, d.stalls, d.stall_seconds, d.latency_ms_sum, d.latencies,
                       d.dropped_frames, d.renditions, d.viewer_sketch)
                .where(*of(d.channel_id, channel_id), d.day >= first_whole, d.day < today))).all()]
            sketches = [row["viewer_sketch"] for row in rows]
            viewers: list[str] = []
            for start, end in partial:
                rows += await day_sums(session, start, end, channel_id, whole=False)
                if start < end:
                    viewers += (await session.scalars(select(s.viewer).distinct().where(
                        *of(s.channel_id, channel_id), s.started_at >= start, s.started_at < end))).all()
        return _summary(rows, count_viewers(sketches, viewers))

    async def stream_report(self, name: str, by: Principal, stream_id: str) -> Report:
        """One past (or live) stream of channel `name`: its audience per minute, its sessions, its chat
        and the followers it brought, for the channel's owner or an admin."""
        async with self._db.session() as session:
            channel = await managed_channel(session, name, by, "see its analytics")
            stream = await session.get(StreamSession, stream_id)
            if stream is None or stream.channel_id != channel.id:
                raise NotFound(f"{channel.name} has no stream {stream_id[:40]!r}")
            now = datetime.fromtimestamp(self._clock(), timezone.utc)
            since, until = stream.started_at, stream.ended_at or now
            a, s = AudienceMinute, ViewerSession
            per_minute: dict[datetime, dict[str, tuple[int, float]]] = {}
            for minute, transport, peak, seconds in (await session.execute(
                    select(a.minute, a.transport, a.peak, a.viewer_seconds).where(a.stream_id == stream_id))).all():
                per_minute.setdefault(minute, {})[transport] = (int(peak), float(seconds))
            minutes = [_point(minute, got) for minute, got in sorted(per_minute.items())]
            rows = await day_sums(session, since - timedelta(minutes=1), until + DAY, channel.id, stream_id=stream_id)
            viewers = await session.scalar(select(func.count()).select_from(
                select(s.viewer).distinct().where(s.channel_id == channel.id, s.stream_id == stream_id).subquery()))
            chat = (await session.execute(
                select(func.count(ChatMessage.id), func.count(distinct(ChatMessage.user_id)))
                .where(ChatMessage.channel_id == channel.id, ChatMessage.created_at >= since,
                       ChatMessage.created_at <= until))).one()
            followers = await session.scalar(
                select(func.count()).select_from(Follow)
                .where(Follow.channel_id == channel.id, Follow.created_at >= since, Follow.created_at <= until))
        return Report(
            channel=channel.name, days=0, since=since, streams=1, **_audience_figures(minutes, (until - since).total_seconds()),
            chat_messages=int(chat[0]), chatters=int(chat[1]), new_followers=int(followers or 0),
            viewing=_summary(rows, int(viewers or 0)), minutes=minutes, stream=stream.id, until=stream.ended_at)


def _summary(rows: list[dict[str, Any]], viewers: int) -> Viewing:
    """The sessions' figures from rows summed per day and transport (`viewing_days`'s columns)."""
    sessions: dict[str, int] = {"webrtc": 0, "hls": 0}
    totals = dict.fromkeys(("session_seconds", "watch_seconds", "stall_seconds", "dropped_frames"), 0.0)
    mean_parts = ("startup_ms_sum", "startups", "latency_ms_sum", "latencies")  # averaged per transport
    means = {t: dict.fromkeys(mean_parts, 0.0) for t in sessions}
    shown: dict[str, float] = {}
    for row in rows:
        transport = row["transport"]
        sessions[transport] = sessions.get(transport, 0) + row["sessions"]
        for key in totals:
            totals[key] += row[key]
        sums = means.setdefault(transport, dict.fromkeys(mean_parts, 0.0))
        for key in mean_parts:
            sums[key] += row[key]
        add_renditions(shown, [row["renditions"]])
    count = sum(sessions.values())
    watched = totals["watch_seconds"] + totals["stall_seconds"]
    all_shown = sum(shown.values())
    return Viewing(
        sessions=sessions, viewers=viewers,
        average_session_seconds=round(totals["session_seconds"] / count, 1) if count else 0.0,
        startup_ms={t: round(m["startup_ms_sum"] / m["startups"]) if m["startups"] else None for t, m in means.items()},
        rebuffering=round(totals["stall_seconds"] / watched, 4) if watched else None,
        latency_ms={t: round(m["latency_ms_sum"] / m["latencies"]) if m["latencies"] else None for t, m in means.items()},
        dropped_frames=int(totals["dropped_frames"]),
        renditions={name: round(sec / all_shown, 3) for name, sec in sorted(shown.items())} if all_shown else {})


def _audience_figures(minutes: list[MinuteAudience], live: float) -> dict[str, Any]:
    """A report's audience figures from its points and the seconds it was live."""
    watch = {"webrtc": sum(m.webrtc_seconds for m in minutes), "hls": sum(m.hls_seconds for m in minutes)}
    watch["total"] = watch["webrtc"] + watch["hls"]
    return dict(live_seconds=round(live, 1), peak_concurrent=max((m.concurrent for m in minutes), default=0),
                average_concurrent=round(watch["total"] / live, 2) if live > 0 else 0.0,
                watch_seconds={k: round(v, 1) for k, v in watch.items()})


def _point(at: datetime, got: dict[str, tuple[int, float]], peak: int = -1) -> MinuteAudience:
    webrtc, hls = got.get("webrtc", (0, 0.0)), got.get("hls", (0, 0.0))
    return MinuteAudience(at, webrtc[0], hls[0], webrtc[1], hls[1], peak)
