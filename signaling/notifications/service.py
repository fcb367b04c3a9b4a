"""What followers are told, and what they choose to be told.

Events leave jobs in the outbox in their own transactions (`stream_live_job`, `reminder_job`, …);
the worker runs them here:

- `live`: a stream went live `settle` seconds ago. A stream already over by then (a false start)
  tells nobody, and neither does one within `cooldown` of the channel's last go-live notification
  (a broadcaster whose connection dropped and came back). Otherwise every follower whose bell allows
  it gets an in-app notification, written in one INSERT … SELECT however many followers there are,
  and the channel's webhooks get theirs.
- `reminder`: a scheduled stream starts in `reminder_lead` seconds; followers whose bell is on for
  everything are reminded (unless the entry moved or went, or the channel is already live).
- `ended`, `follow`: for webhooks only.

Open tabs hear of new notifications over the chat WebSocket: one bus message per batch of users
(topic `notifications`), which each process hands to its connections of those users.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import delete, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bus import Bus, Message
from signaling.auth.roles import Principal
from signaling.db.database import Database
from signaling.db.models import (
    Channel, Follow, Notification, PushSubscription, ScheduledStream, StreamSession, User, Webhook,
)
from signaling.errors import NotFound
from signaling.notifications.email import email_jobs, email_recipients
from signaling.notifications.outbox import Job, enqueue, waiting
from signaling.notifications.push import Note, push_jobs

log = logging.getLogger(__name__)

TOPIC = "notifications"  # bus topic: {"recipients": [[user id, notification id], ...], "notification": {...}}
BELLS = ("all", "live", "none")  # a follower's bell: everything (go-live and reminders), go-live only, nothing
USERS_PER_MESSAGE = 1000
MAX_KEPT = 200  # notifications kept per user (older ones are removed as new ones come)


@dataclass(frozen=True, slots=True)
class NotifyRules:
    settle: float = 30.0  # seconds a stream must stay live before followers hear of it
    cooldown: float = 600.0  # seconds after a go-live notification in which the channel's next is not sent
    reminder_lead: float = 900.0  # seconds before a scheduled start that followers are reminded


@dataclass(frozen=True, slots=True)
class Preferences:
    in_app: bool
    push: bool
    email: bool
    email_verified: bool = False


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    kind: str
    channel: str | None
    title: str
    body: str
    url: str
    created_at: datetime
    read: bool


# --- jobs, left by events in their own transactions ---

def stream_live_job(session: AsyncSession, channel_id: int, stream: str, now: datetime, rules: NotifyRules) -> None:
    enqueue(session, "live", {"channel_id": channel_id, "stream": stream, "at": now.isoformat()},
            now + timedelta(seconds=rules.settle))


def stream_ended_job(session: AsyncSession, channel_id: int, stream: str, lasted: float, now: datetime,
                     rules: NotifyRules) -> None:
    """Told after `settle` (a broadcaster back by then is not "ended"), and never for a false start."""
    if lasted >= rules.settle:
        enqueue(session, "ended", {"channel_id": channel_id, "stream": stream, "at": now.isoformat()},
                now + timedelta(seconds=rules.settle))


async def follow_job(session: AsyncSession, channel_id: int, user_id: int, now: datetime) -> None:
    """One waiting job per follower and channel, however often they unfollow and follow again."""
    key = f"follow:{channel_id}:{user_id}"
    if not await waiting(session, key):
        enqueue(session, "follow", {"channel_id": channel_id, "user_id": user_id, "at": now.isoformat()}, now, key)


def reminder_job(session: AsyncSession, entry_id: int, starts_at: datetime, now: datetime, rules: NotifyRules) -> None:
    due = starts_at - timedelta(seconds=rules.reminder_lead)
    if due > now:  # an entry that starts sooner than that gets no reminder: the schedule shows it
        enqueue(session, "reminder", {"entry_id": entry_id, "starts_at": starts_at.isoformat()}, due,
                reminder_key(entry_id))


def reminder_key(entry_id: int) -> str:
    return f"reminder:{entry_id}"


def _at(job: Job) -> datetime:
    """When the job's event happened (its `at`; jobs of older releases: the far future, so all hooks count)."""
    try:
        return datetime.fromisoformat(str(job.payload["at"]))
    except (KeyError, ValueError):
        return datetime.max.replace(tzinfo=UTC)


class NotificationService:
    def __init__(self, db: Database, bus: Bus, base_url: str, rules: NotifyRules = NotifyRules(),
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._bus = bus
        self._base = base_url
        self.rules = rules
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # --- what a user sees and chooses ---

    async def listing(self, user: Principal, before: int | None, limit: int) -> tuple[list[Item], int, int | None]:
        """The user's notifications, newest first; (items, unread count, the `before` of the next page)."""
        async with self._db.session() as session:
            statement = (select(Notification, Channel.name).outerjoin(Channel, Channel.id == Notification.channel_id)
                         .where(Notification.user_id == user.user_id))
            if before is not None:
                statement = statement.where(Notification.id < before)
            rows = (await session.execute(statement.order_by(Notification.id.desc()).limit(limit + 1))).all()
            unread = await self._unread(session, user.user_id)
        items = [Item(n.id, n.kind, name, n.title, n.body, n.url, n.created_at, n.read_at is not None)
                 for n, name in rows[:limit]]
        return items, unread, (items[-1].id if len(rows) > limit else None)

    async def mark_read(self, user: Principal, ids: list[int] | None) -> int:
        """Mark these (or, with None, all) of the user's notifications read; the unread count left."""
        now = self._now()
        async with self._db.session() as session:
            statement = update(Notification).where(Notification.user_id == user.user_id, Notification.read_at.is_(None))
            if ids is not None:
                statement = statement.where(Notification.id.in_(ids))
            await session.execute(statement.values(read_at=now))
            return await self._unread(session, user.user_id)

    async def _unread(self, session: AsyncSession, user_id: int) -> int:
        return int(await session.scalar(select(func.count()).select_from(Notification).where(
            Notification.user_id == user_id, Notification.read_at.is_(None))) or 0)

    async def preferences(self, user: Principal) -> Preferences:
        async with self._db.session() as session:
            row = await session.get(User, user.user_id)
            if row is None:
                raise NotFound("your account is gone")
            return Preferences(row.notify_in_app, row.notify_push, row.notify_email, row.email_verified)

    async def change_preferences(self, user: Principal, *, in_app: bool | None, push: bool | None,
                                 email: bool | None) -> Preferences:
        async with self._db.session() as session:
            row = await session.get(User, user.user_id)
            if row is None:
                raise NotFound("your account is gone")
            if in_app is not None:
                row.notify_in_app = in_app
            if push is not None:
                row.notify_push = push
            if email is not None:
                row.notify_email = email
            return Preferences(row.notify_in_app, row.notify_push, row.notify_email, row.email_verified)

    # --- the jobs ---

    async def on_live(self, job: Job) -> None:
        channel_id, stream = int(job.payload["channel_id"]), str(job.payload["stream"])
        now = self._now()
        async with self._db.session() as session:
            channel = await session.get(Channel, channel_id)
            live = await session.scalar(select(StreamSession.id).where(
                StreamSession.id == stream, StreamSession.ended_at.is_(None)))
            if channel is None or live is None:
                log.info("stream %s ended before it settled: nobody is told", stream)
                return
            # Webhooks hear of every stream that settles (their "ended" was told too); followers do not
            # hear again within the cooldown (a broadcaster whose connection dropped and came back).
            await self._webhook_jobs(session, channel, "live", {"stream": stream}, now, _at(job))
            last = channel.live_notified_at
            if last is not None and (now - last).total_seconds() < self.rules.cooldown:
                log.info("%s went live again within the cooldown: its followers are not told again", channel.name)
                return
            channel.live_notified_at = now  # in this transaction: a second run of this job tells nobody twice
            owner = await session.get(User, channel.owner_id)
            display = (owner.display_name or owner.username) if owner is not None else channel.name
            note = {"kind": "live", "channel": channel.name, "title": f"{display} is live",
                    "body": channel.title or "", "url": f"/watch/{quote(channel.name)}"}
            told = await self._tell_followers(session, channel, ("all", "live"), note, now)
            await self._push_followers(session, channel, ("all", "live"), note, now, urgency="high", ttl=3600)
            email_jobs(session, list(await session.scalars(email_recipients(channel.id, ("all", "live")))), note, now)
        await self._publish(told, note, now)

    async def on_reminder(self, job: Job) -> None:
        entry_id, starts_at = int(job.payload["entry_id"]), str(job.payload["starts_at"])
        now = self._now()
        async with self._db.session() as session:
            entry = await session.get(ScheduledStream, entry_id)
            if entry is None or entry.starts_at.isoformat() != starts_at:
                return  # taken off the schedule, or moved (the move left a reminder of its own)
            channel = await session.get(Channel, entry.channel_id)
            if channel is None or channel.is_live:
                return
            owner = await session.get(User, channel.owner_id)
            display = (owner.display_name or owner.username) if owner is not None else channel.name
            minutes = max(1, round((entry.starts_at - now).total_seconds() / 60))
            note = {"kind": "reminder", "channel": channel.name, "title": f"{display} goes live in {minutes} min",
                    "body": entry.title, "url": f"/watch/{quote(channel.name)}"}
            told = await self._tell_followers(session, channel, ("all",), note, now)
            await self._push_followers(session, channel, ("all",), note, now, urgency="normal",
                                       ttl=max(60, int((entry.starts_at - now).total_seconds())))
            email_jobs(session, list(await session.scalars(email_recipients(channel.id, ("all",)))), note, now)
        await self._publish(told, note, now)

    async def on_ended(self, job: Job) -> None:
        async with self._db.session() as session:
            channel = await session.get(Channel, int(job.payload["channel_id"]))
            if channel is not None and not channel.is_live:  # not back already
                await self._webhook_jobs(session, channel, "ended", {"stream": str(job.payload["stream"])}, self._now(),
                                         _at(job))

    async def on_follow(self, job: Job) -> None:
        async with self._db.session() as session:
            channel = await session.get(Channel, int(job.payload["channel_id"]))
            user_id = int(job.payload["user_id"])
            follow = await session.get(Follow, (user_id, channel.id)) if channel is not None else None
            user = await session.get(User, user_id)
            if channel is None or follow is None or user is None:
                return  # unfollowed already: nothing to announce
            await self._webhook_jobs(session, channel, "follow",
                                     {"follower": {"username": user.username,
                                                   "display_name": user.display_name or user.username}}, self._now(),
                                     _at(job))

    async def _tell_followers(self, session: AsyncSession, channel: Channel, bells: tuple[str, ...],
                              note: dict[str, Any], now: datetime) -> list[tuple[int, int]]:
        """One in-app notification for each follower whose bell is in `bells` and who takes in-app
        notifications, in one statement; (user id, notification id) of each."""
        rows = select(Follow.follower_id, literal(note["kind"]), literal(channel.id), literal(note["title"][:200]),
                      literal(note["body"][:500]), literal(note["url"]), literal(now, Notification.created_at.type)).join(
            User, User.id == Follow.follower_id).where(
            Follow.channel_id == channel.id, Follow.notify.in_(bells), User.notify_in_app.is_(True))
        added = await session.execute(insert(Notification).from_select(
            ["user_id", "kind", "channel_id", "title", "body", "url", "created_at"], rows)
            .returning(Notification.user_id, Notification.id))
        return [(int(user), int(note_id)) for user, note_id in added]

    async def _push_followers(self, session: AsyncSession, channel: Channel, bells: tuple[str, ...],
                              note: dict[str, Any], now: datetime, urgency: str, ttl: int) -> None:
        """`push` jobs for the browsers of the followers whose bell is in `bells` and who take push."""
        ids = list(await session.scalars(
            select(PushSubscription.id).join(Follow, Follow.follower_id == PushSubscription.user_id)
            .join(User, User.id == PushSubscription.user_id)
            .where(Follow.channel_id == channel.id, Follow.notify.in_(bells), User.notify_push.is_(True))
            .order_by(PushSubscription.id)))
        if ids:
            pushed = Note(note["title"][:200], note["body"][:300], note["url"], f"{note['kind']}-{channel.id}",
                              urgency, ttl)
            push_jobs(session, ids, pushed, now)

    async def _webhook_jobs(self, session: AsyncSession, channel: Channel, event: str, data: dict[str, Any],
                            now: datetime, happened: datetime) -> None:
        """A delivery job for each of the channel's hooks that wants `event` and existed when it `happened`."""
        hooks = await session.scalars(select(Webhook).where(Webhook.channel_id == channel.id,
                                                            Webhook.created_at <= happened))
        for hook in hooks:
            if event in (hook.events or []):
                enqueue(session, "webhook", {"webhook_id": hook.id, "event": event, "channel": channel.name,
                                             "at": now.isoformat(), **data}, now)

    async def _publish(self, told: list[tuple[int, int]], note: dict[str, Any], now: datetime) -> None:
        """Tell open tabs (best effort: the notification is stored whatever happens here)."""
        frame = {**note, "at": now.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        try:
            for start in range(0, len(told), USERS_PER_MESSAGE):
                await self._bus.publish(Message(TOPIC, {"recipients": told[start:start + USERS_PER_MESSAGE],
                                                        "notification": frame}))
        except Exception as exc:  # noqa: BLE001 - the bus is down: the bell finds them on its next look
            log.warning("could not tell open tabs of a notification: %s", exc)

    async def prune(self) -> int:
        """Keep each user's newest MAX_KEPT notifications; how many went (run every few minutes)."""
        gone = 0
        while True:
            async with self._db.session() as session:
                ranked = select(Notification.id, func.row_number().over(
                    partition_by=Notification.user_id, order_by=Notification.id.desc()).label("n")).subquery()
                old = list(await session.scalars(select(ranked.c.id).where(ranked.c.n > MAX_KEPT).limit(10_000)))
                if old:
                    await session.execute(delete(Notification).where(Notification.id.in_(old)))
            gone += len(old)
            if len(old) < 10_000:
                return gone
            await asyncio.sleep(0.1)  # in slices: other writers get their turns
