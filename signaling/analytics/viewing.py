"""Viewing sessions: one row per viewing of a stream (`viewer_sessions`), written by whoever sees it —
the node serving a WebRTC viewer, the player's quality beacons, an HLS player's requests — and summed
per day (`viewing_days`) for the analytics of days gone.

Writes are buffered and go out every `flush_every` seconds in one transaction of upserts, each writer
touching only its own columns, so a node and a player may write the same session in either order and
on any signaling instance. The player's figures are cumulative (each beacon carries the session's
totals so far), so the last write wins and a lost beacon loses nothing but its moment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import case, delete, func, literal, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from lifecycle.tasks import Periodic
from signaling.analytics.viewer_sketches import sketch_of
from signaling.db.database import Database, upsert
from signaling.db.models import AudienceMinute, Channel, StreamSession, ViewerSession, ViewingDay

log = logging.getLogger(__name__)

MAX_PENDING = 50_000  # session rows waiting for the database; a long outage loses the oldest, and says so
PURGE_BATCH = 10_000  # sessions deleted per statement past their retention
DAY = timedelta(days=1)
STREAM_TTL = 5.0
MAX_STREAMS = 10_000

# What an insert needs that its writer may not know (the other writer fills them in).
_DEFAULTS: dict[str, Any] = dict(stream_id="", ended_at=None, seconds=0.0, watch_seconds=0.0, startup_ms=None,
                                 stalls=0, stall_seconds=0.0, latency_ms=None, dropped_frames=0, renditions={})
PLAYER_FIGURES = ("watch_seconds", "startup_ms", "stalls", "stall_seconds", "latency_ms", "dropped_frames", "renditions")


@dataclass(frozen=True, slots=True)
class Figures:
    """What a player tells of its session so far (cumulative)."""

    watch_seconds: float
    startup_ms: int | None
    stalls: int
    stall_seconds: float
    latency_ms: int | None
    dropped_frames: int
    renditions: dict[str, float]


def utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, timezone.utc)


class ViewingBook:
    def __init__(self, db: Database, retention_days: int, clock: Callable[[], float] = time.time,
                 flush_every: float = 5.0, roll_every: float = 600.0) -> None:
        self._db = db
        self._retention = timedelta(days=retention_days)
        self._clock = clock
        self._pending: dict[str, tuple[dict[str, Any], set[str]]] = {}  # id -> (values, columns an update sets)
        self._writing = asyncio.Lock()
        self._periodic = Periodic("viewing-sessions", flush_every, self.flush)
        self._days = Periodic("viewing-days", roll_every, self._roll)  # its own task: a long roll delays no flush
        self._streams: dict[str, tuple[float, tuple[int, str] | None]] = {}  # stream_of's answers
        self.written = 0  # rows upserted so far (the benchmark's "database writes")
        self.dropped = 0  # rows dropped: the database was away too long, or refused them

    # --- what the writers tell ---

    def node_session(self, session: str, channel_id: int, stream: str, viewer: str | None, started: float,
                     now: float, ended: bool) -> None:
        """The node serving a WebRTC viewer: the session's times (`viewer` when it is signed in)."""
        values = dict(channel_id=channel_id, stream_id=stream, transport="webrtc", source="node",
                      viewer=viewer or f"a:{session}", started_at=utc(started), last_seen_at=utc(now),
                      seconds=round(now - started, 3), ended_at=utc(now) if ended else None)
        columns = {"channel_id", "stream_id", "source", "started_at", "last_seen_at", "seconds", "ended_at"}
        self._put(session, values, columns | ({"viewer"} if viewer else set()))

    def player_session(self, session: str, channel_id: int, stream: str, transport: str, viewer: str,
                       figures: Figures, ending: bool) -> None:
        """A player's beacon: its figures so far; an HLS player's session also lasts as long as it beats."""
        now = self._clock()
        values = dict(channel_id=channel_id, stream_id=stream, transport=transport, source="player", viewer=viewer,
                      started_at=utc(now - figures.watch_seconds - figures.stall_seconds), last_seen_at=utc(now),
                      seconds=round(figures.watch_seconds + figures.stall_seconds, 3),
                      ended_at=utc(now) if ending else None,
                      watch_seconds=round(figures.watch_seconds, 3), startup_ms=figures.startup_ms,
                      stalls=figures.stalls, stall_seconds=round(figures.stall_seconds, 3),
                      latency_ms=figures.latency_ms, dropped_frames=figures.dropped_frames,
                      renditions={k: round(v, 1) for k, v in figures.renditions.items()})
        columns = {c for c in PLAYER_FIGURES if values[c] is not None}  # a figure not known yet erases none
        if transport != "webrtc":  # a WebRTC session's times (and stream) are the node's
            columns |= {"last_seen_at", "seconds", "stream_id"} | ({"ended_at"} if ending else set())
        else:  # ...its viewer the page's, unless the node knows the signed-in user
            columns.add("viewer")
        self._put(session, values, columns)

    def request_session(self, session: str, channel_id: int, stream: str, first: float, last: float, ended: bool) -> None:
        """An HLS player that tells nothing, seen by its requests."""
        values = dict(channel_id=channel_id, stream_id=stream, transport="hls", source="requests",
                      viewer=f"r:{session}", started_at=utc(first), last_seen_at=utc(last),
                      seconds=round(last - first, 3), ended_at=utc(last) if ended else None)
        self._put(session, values, {"last_seen_at", "seconds", "ended_at"})

    def _put(self, session: str, values: dict[str, Any], columns: set[str]) -> None:
        held = self._pending.get(session)
        if held is not None:  # not written yet: one upsert that does what the two would, in order
            _merge(held, values, columns)
            return
        if len(self._pending) >= MAX_PENDING:
            self._pending.pop(next(iter(self._pending)))
            self.dropped += 1
            if self.dropped % 1000 == 1:  # said once in a while, not for every row
                log.warning("viewing sessions: %d rows wait for the database; %d of the oldest dropped so far",
                            MAX_PENDING, self.dropped)
        self._pending[session] = (values, columns)

    async def stream_of(self, channel: str) -> tuple[int, str] | None:
        """(channel id, its latest stream's id or "") of channel `channel`; None when there is no such
        channel. Kept `STREAM_TTL` seconds: beacons come every 10 s from every player."""
        now = self._clock()
        held = self._streams.get(channel)
        if held is not None and now - held[0] < STREAM_TTL:
            return held[1]
        async with self._db.session() as session:
            channel_id = await session.scalar(select(Channel.id).where(Channel.name == channel))
            stream = "" if channel_id is None else await session.scalar(
                select(StreamSession.id).where(StreamSession.channel_id == channel_id)
                .order_by(StreamSession.started_at.desc()).limit(1))
        found = None if channel_id is None else (channel_id, stream or "")
        if len(self._streams) >= MAX_STREAMS:
            self._streams.clear()
        self._streams[channel] = (now, found)
        return found

    @property
    def pending(self) -> int:
        return len(self._pending)

    # --- writing ---

    async def flush(self) -> None:
        async with self._writing:
            rows, self._pending = self._pending, {}
            if not rows:
                return
            try:
                await self._write(rows)
            except DBAPIError as exc:
                if not refused(exc):
                    log.warning("viewing sessions: %d rows not written: %s", len(rows), exc)
                    self._restore(rows)
                    return
                # A row it refuses must not hold back the others.
                log.warning("viewing sessions: the database refused a batch (%s); writing row by row", exc)
                await self._write_each(rows)
            except BaseException as exc:  # away (or cancelled at shutdown): keep them for the next flush
                if isinstance(exc, Exception):
                    log.warning("viewing sessions: %d rows not written: %s", len(rows), exc)
                self._restore(rows)
                if not isinstance(exc, Exception):
                    raise
            else:
                self.written += len(rows)

    async def _write(self, rows: dict[str, tuple[dict[str, Any], set[str]]]) -> None:
        groups: dict[frozenset[str], list[dict[str, Any]]] = {}  # one statement per set of columns updated
        for key, (values, columns) in rows.items():
            groups.setdefault(frozenset(columns), []).append({**_DEFAULTS, **values, "id": key})
        async with self._db.session() as session:
            for updated, params in groups.items():
                await session.execute(upsert(session, ViewerSession, updated, _keep_users), params)

    async def _write_each(self, rows: dict[str, tuple[dict[str, Any], set[str]]]) -> None:
        for key, held in rows.items():
            try:
                await self._write({key: held})
            except DBAPIError as exc:
                if not refused(exc):
                    raise
                self.dropped += 1
                log.warning("viewing sessions: row %.24s refused and dropped: %s", key, exc)
            else:
                self.written += 1

    def _restore(self, rows: dict[str, tuple[dict[str, Any], set[str]]]) -> None:
        """Put back rows a flush could not write, before what came meanwhile for the same sessions."""
        later, self._pending = self._pending, {}
        for key, held in list(rows.items())[-MAX_PENDING:]:
            self._pending[key] = held
        for key, (values, columns) in later.items():
            self._put(key, values, columns)

    # --- days ---

    async def roll_days(self) -> int:
        """Sum the sessions of each day since the day before the last one summed (or since the oldest
        session), today included, into `viewing_days`, replacing what an earlier roll wrote: a day's
        sessions go on being written while it lasts, and a little after. How many days it summed."""
        today = day_of(utc(self._clock()))
        async with self._db.session() as session:
            last = await session.scalar(select(func.max(ViewingDay.day)))
            if last is None:
                oldest = [await session.scalar(select(func.min(ViewerSession.started_at))),
                          await session.scalar(select(func.min(AudienceMinute.minute)))]
                first = min((at for at in oldest if at is not None), default=None)
            else:
                first = last - DAY
        if first is None:
            return 0
        start = max(day_of(first), day_of(today - self._retention))
        days = 0
        while start <= today:
            try:
                async with self._db.session() as session:  # a day per transaction: a long catch-up holds no lock long
                    sums = await day_sums(session, start, start + DAY)
                    if sums:
                        await session.execute(upsert(session, ViewingDay, set(sums[0]) - {"channel_id", "day", "transport"}),
                                              sums)
            except DBAPIError as exc:  # that day stays as it was; the next ones are summed
                if not refused(exc):
                    raise
                log.warning("viewing days: %s not summed: %s", start.date(), exc)
            start += DAY
            days += 1
        return days

    async def purge(self) -> int:
        """Delete the sessions past their retention (their days are summed already): how many."""
        before = utc(self._clock()) - self._retention
        removed = 0
        while True:
            async with self._db.session() as session:
                ids = (await session.scalars(select(ViewerSession.id).where(ViewerSession.started_at < before)
                                             .limit(PURGE_BATCH))).all()
                if ids:
                    await session.execute(delete(ViewerSession).where(ViewerSession.id.in_(ids)))
            removed += len(ids)
            if len(ids) < PURGE_BATCH:
                return removed

    async def _roll(self) -> None:
        await self.roll_days()
        await self.purge()

    def start(self) -> None:
        self._periodic.start()
        self._days.start()

    async def close(self) -> None:
        await self._days.close()
        await self._periodic.close()
        await self.flush()


class ViewingCollector:
    """/metrics: what the book wrote and what waits (a database that falls behind shows here first)."""

    def __init__(self, book: ViewingBook) -> None:
        self._book = book

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("tally_viewing_rows_written", "Viewing-session rows upserted by this process",
                                  value=self._book.written)
        yield GaugeMetricFamily("tally_viewing_rows_pending", "Viewing-session rows waiting to be written",
                                value=self._book.pending)


def refused(exc: DBAPIError) -> bool:
    """Whether the database refused the data itself (a value too long or out of range, a broken
    constraint: SQLSTATE classes 22 and 23), rather than being away (retried later)."""
    if isinstance(exc, (DataError, IntegrityError)):
        return True
    state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return isinstance(state, str) and state[:2] in ("22", "23")


def _user(viewer: str) -> bool:
    return viewer.startswith("u:")


def _merge(held: tuple[dict[str, Any], set[str]], values: dict[str, Any], columns: set[str]) -> None:
    """`held` (an upsert not written yet) becomes what it and then this one would do."""
    held[0].update({c: values[c] for c in columns if c != "viewer" or not _user(held[0]["viewer"])})
    held[1].update(columns)


def _keep_users(new: Any) -> dict[str, Any]:
    """A signed-in viewer (as its node knows it) is not replaced by its page's anonymous id."""
    kept = ViewerSession.viewer
    return {"viewer": case((kept.like("u:%"), kept), else_=new.viewer)}


def day_of(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def partial_days(since: datetime, now: datetime) -> tuple[datetime, datetime, list[tuple[datetime, datetime]]]:
    """A period up to now as the first whole day, today, and the spans read from raw rows rather than
    daily sums: the partial first day and today (either may be empty)."""
    first_whole, today = day_of(since) + DAY, day_of(now)
    return first_whole, today, [(since, min(first_whole, today)), (max(today, since), now + DAY)]


def of(column: Any, value: object | None) -> list[Any]:
    """`column == value` as a filter, or no filter at all for None (the whole site, every stream)."""
    return [column == value] if value is not None else []


async def day_sums(session: AsyncSession, start: datetime, end: datetime, channel_id: int | None = None,
                   whole: bool = True, stream_id: str | None = None) -> list[dict[str, Any]]:
    """The sessions started in [start, end) and the audience's minutes in it, summed per channel and
    transport, as `viewing_days` rows (of the day `start`); `whole=False`: a part of a day, whose
    distinct viewers (and their sketch) are not wanted."""
    if start >= end:
        return []
    s, m = ViewerSession, AudienceMinute
    where = [s.started_at >= start, s.started_at < end, *of(s.channel_id, channel_id), *of(s.stream_id, stream_id)]
    minutes = [m.minute >= start, m.minute < end, *of(m.channel_id, channel_id), *of(m.stream_id, stream_id)]
    sums = (await session.execute(
        select(s.channel_id, s.transport, func.count(), literal(0), func.sum(s.seconds),
               func.sum(case((s.watch_seconds > 0, 1), else_=0)),
               func.sum(s.watch_seconds), func.sum(s.startup_ms), func.count(s.startup_ms), func.sum(s.stalls),
               func.sum(s.stall_seconds), func.sum(s.latency_ms), func.count(s.latency_ms), func.sum(s.dropped_frames))
        .where(*where).group_by(s.channel_id, s.transport))).all()
    renditions: dict[tuple[int, str], dict[str, float]] = {}
    for channel, transport, shown in (await session.execute(
            select(s.channel_id, s.transport, s.renditions).where(*where, s.watch_seconds > 0))).all():
        add_renditions(renditions.setdefault((channel, transport), {}), [shown])
    out = {(channel, transport): dict(
        channel_id=channel, day=start, transport=transport, sessions=int(n), viewers=int(viewers),
        session_seconds=float(seconds or 0), player_sessions=int(players or 0), watch_seconds=float(watch or 0),
        startup_ms_sum=float(startup or 0), startups=int(startups or 0), stalls=int(stalls or 0),
        stall_seconds=float(stalled or 0), latency_ms_sum=float(latency or 0), latencies=int(latencies or 0),
        dropped_frames=int(dropped or 0), renditions=renditions.get((channel, transport), {}), peak=0, peak_total=0,
        audience_seconds=0.0, viewer_sketch=None)
        for channel, transport, n, viewers, seconds, players, watch, startup, startups, stalls, stalled, latency,
        latencies, dropped in sums}
    if whole:
        viewers: dict[tuple[int, str], list[str]] = {}
        for channel, transport, viewer in (await session.execute(
                select(s.channel_id, s.transport, s.viewer).distinct().where(*where))).all():
            viewers.setdefault((channel, transport), []).append(viewer)
        for key, distinct_viewers in viewers.items():
            out[key].update(viewers=len(distinct_viewers), viewer_sketch=sketch_of(distinct_viewers))
    for channel, transport, peak, audience in (await session.execute(
            select(m.channel_id, m.transport, func.max(m.peak), func.sum(m.viewer_seconds))
            .where(*minutes).group_by(m.channel_id, m.transport))).all():
        row = out.get((channel, transport))
        if row is None:  # watched, but by no session written (HLS players that only beat, older data)
            row = out[(channel, transport)] = dict(_EMPTY_DAY, channel_id=channel, day=start, transport=transport, renditions={})
        row.update(peak=int(peak or 0), audience_seconds=float(audience or 0))
    per_minute = (select(m.channel_id, func.sum(m.peak).label("total"))
                  .where(*minutes).group_by(m.channel_id, m.minute).subquery())
    totals = dict((await session.execute(select(per_minute.c.channel_id, func.max(per_minute.c.total))
                                         .group_by(per_minute.c.channel_id))).all())
    for row in out.values():
        row["peak_total"] = int(totals.get(row["channel_id"]) or 0)
    return list(out.values())


_EMPTY_DAY: dict[str, Any] = dict(sessions=0, viewers=0, viewer_sketch=None, session_seconds=0.0, player_sessions=0, watch_seconds=0.0,
                                  startup_ms_sum=0.0, startups=0, stalls=0, stall_seconds=0.0, latency_ms_sum=0.0,
                                  latencies=0, dropped_frames=0)


def add_renditions(into: dict[str, float], shown: Iterable[dict[str, float] | None]) -> dict[str, float]:
    for one in shown:
        for name, seconds in (one or {}).items():
            into[name] = round(into.get(name, 0.0) + float(seconds), 1)
    return into
