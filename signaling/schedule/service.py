"""Streams that are coming: a broadcaster schedules them (title, start, expected length); the channel
page, the directory's Upcoming and the channel's iCalendar feed show them. A stream that starts in an
entry's window (from EARLY before its start to its expected end) is linked to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from signaling.auth.roles import Principal
from signaling.channels.service import managed_channel
from signaling.db.database import Database
from signaling.db.models import Channel, ScheduledStream, User
from signaling.errors import Conflict, Invalid, NotFound
from signaling.notifications.outbox import drop
from signaling.notifications.service import NotifyRules, reminder_job, reminder_key

EARLY = timedelta(minutes=30)  # a stream this much before an entry's start still counts as it
MAX_AHEAD = timedelta(days=366)  # how far ahead an entry may be
MAX_UPCOMING = 50  # entries a channel may have coming at once
MAX_MINUTES = 24 * 60


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    channel: str
    display_name: str
    title: str
    starts_at: datetime
    expected_minutes: int
    stream_id: str | None

    @property
    def ends_at(self) -> datetime:
        return self.starts_at + timedelta(minutes=self.expected_minutes)


class ScheduleService:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time, notify: NotifyRules = NotifyRules()) -> None:
        self._db = db
        self._clock = clock
        self._notify = notify

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def add(self, name: str, by: Principal, title: str, starts_at: datetime, expected_minutes: int) -> Entry:
        now = self._now()
        if starts_at.tzinfo is None:
            raise Invalid("say the start's time zone (an ISO 8601 time with Z or an offset)",
                          errors=[{"field": "starts_at", "message": "Give a time zone, like 2027-01-31T18:00:00Z."}])
        starts_at = starts_at.astimezone(UTC)
        if starts_at < now - timedelta(minutes=1) or starts_at > now + MAX_AHEAD:
            raise Invalid("the start must be from now to a year ahead",
                          errors=[{"field": "starts_at", "message": "Choose a time from now to a year ahead."}])
        if not 1 <= expected_minutes <= MAX_MINUTES:
            raise Invalid("the expected length is 1 minute to 24 hours",
                          errors=[{"field": "expected_minutes", "message": "Use 1 to 1440 minutes."}])
        async with self._db.session() as session:
            channel = await managed_channel(session, name, by, "schedule its streams")
            coming = await session.scalar(select(func.count()).select_from(ScheduledStream).where(
                ScheduledStream.channel_id == channel.id, ScheduledStream.starts_at >= now))
            if (coming or 0) >= MAX_UPCOMING:
                raise Conflict(f"a channel may have {MAX_UPCOMING} streams scheduled at once: delete one first")
            row = ScheduledStream(channel_id=channel.id, title=title.strip() or channel.title or name,
                                  starts_at=starts_at, expected_minutes=expected_minutes, created_at=now)
            session.add(row)
            await session.flush()
            reminder_job(session, row.id, starts_at, now, self._notify)
            owner = await session.get(User, channel.owner_id)
            entry = _entry(row, channel, owner)
            await session.commit()
        return entry

    async def remove(self, name: str, entry_id: int, by: Principal) -> None:
        async with self._db.session() as session:
            channel = await managed_channel(session, name, by, "change its schedule")
            gone = await session.execute(delete(ScheduledStream).where(
                ScheduledStream.id == entry_id, ScheduledStream.channel_id == channel.id))
            if not gone.rowcount:  # type: ignore[attr-defined]
                raise NotFound(f"there is no scheduled stream {entry_id} on {name!r}")
            await drop(session, reminder_key(entry_id))  # nobody is reminded of it
            await session.commit()

    async def of_channel(self, name: str, limit: int = 20, past: bool = False) -> list[Entry]:
        """A channel's entries still to come (or whose window is open), soonest first; with `past`, the
        ones of the last 90 days too (for the calendar feed)."""
        now = self._now()
        since = now - timedelta(days=90) if past else now - timedelta(minutes=MAX_MINUTES)
        async with self._db.session() as session:
            found = (await session.execute(select(Channel, User).join(User, User.id == Channel.owner_id)
                                           .where(Channel.name == name))).first()
            if found is None:
                raise NotFound(f"there is no channel {name!r}")
            channel, owner = found
            rows = await session.scalars(
                select(ScheduledStream).where(ScheduledStream.channel_id == channel.id, ScheduledStream.starts_at >= since)
                .order_by(ScheduledStream.starts_at).limit(MAX_UPCOMING + limit))
            entries = [_entry(row, channel, owner) for row in rows]
        return [e for e in entries if past or e.ends_at > now][:limit]

    async def upcoming(self, limit: int) -> list[Entry]:
        """Every channel's entries starting from now on, soonest first (the directory's Upcoming)."""
        now = self._now()
        async with self._db.session() as session:
            rows = (await session.execute(
                select(ScheduledStream, Channel, User).join(Channel, Channel.id == ScheduledStream.channel_id)
                .join(User, User.id == Channel.owner_id)
                .where(ScheduledStream.starts_at >= now, Channel.is_live.is_(False))
                .order_by(ScheduledStream.starts_at).limit(limit))).all()
            return [_entry(row, channel, owner) for row, channel, owner in rows]


def _entry(row: ScheduledStream, channel: Channel, owner: User | None) -> Entry:
    display = (owner.display_name or owner.username) if owner is not None else channel.name
    return Entry(row.id, channel.name, display, row.title, row.starts_at, row.expected_minutes, row.stream_id)


async def link_stream(session: AsyncSession, channel_id: int, stream: str, now: datetime) -> None:
    """A stream of the channel started at `now`: the entry whose window holds it (the nearest start)
    is this stream. Runs in the transaction that records the stream."""
    candidates = await session.scalars(select(ScheduledStream).where(
        ScheduledStream.channel_id == channel_id, ScheduledStream.stream_id.is_(None),
        ScheduledStream.starts_at <= now + EARLY, ScheduledStream.starts_at >= now - timedelta(minutes=MAX_MINUTES)))
    open_windows = [row for row in candidates if now < row.starts_at + timedelta(minutes=row.expected_minutes)]
    if open_windows:
        min(open_windows, key=lambda row: abs((row.starts_at - now).total_seconds())).stream_id = stream
