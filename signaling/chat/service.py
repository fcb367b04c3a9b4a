"""Chat as a service: who may post, posting, history, and moderation, all enforced here.

Every change is stored first, then announced on the bus topic `chat` as a frame of the wire protocol;
each signaling process relays the frames of the channels its clients are in (`ChatHub`). So a post on
one process reaches viewers on every process, and the database id is the one order of a conversation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from bus import Bus, Message
from signaling.auth.rate_limit import RateLimiter
from signaling.auth.roles import Principal, Role
from signaling.chat import protocol
from signaling.chat.protocol import ChatProblem
from signaling.db.database import Database
from signaling.db.models import Channel, ChannelModerator, ChatBan, ChatMessage, Follow, User
from signaling.errors import Conflict, Forbidden, Invalid, NotFound

TOPIC = "chat"
WRITE_ATTEMPTS = 2


@dataclass(frozen=True, slots=True)
class ChatRules:
    max_length: int = 500
    posts_per_period: int = 5  # a user's posts per channel in any `period` seconds
    period: float = 10.0
    history_on_join: int = 50
    max_slow_mode: int = 3600
    max_timeout: int = 14 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Standing:
    """What one user may do in one channel's chat right now."""

    can_post: bool
    can_moderate: bool
    reason: str = ""  # why not, when can_post is false
    code: str = ""  # the protocol's error code for that refusal


@dataclass(frozen=True, slots=True)
class ChatSettings:
    slow_mode: int
    followers_only: bool

    def frame(self, max_length: int) -> dict[str, Any]:
        return {"slow_mode": self.slow_mode, "followers_only": self.followers_only, "max_length": max_length}


@dataclass(frozen=True, slots=True)
class BanView:
    username: str
    until: datetime | None
    reason: str


def message_frame(row: ChatMessage, user: User, badges: list[str]) -> dict[str, Any]:
    return {
        "type": "message",
        "id": row.id,
        "user": {"username": user.username, "display_name": user.display_name or user.username, "badges": badges},
        "text": row.text,
        "at": protocol.timestamp(row.created_at),
    }


class ChatService:
    def __init__(
        self, db: Database, bus: Bus, limiter: RateLimiter, rules: ChatRules, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._bus = bus
        self._limiter = limiter
        self.rules = rules
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def _announce(self, channel: str, frame: dict[str, Any]) -> None:
        await self._bus.publish(Message(TOPIC, {"channel": channel, "frame": frame}))

    # --- reading ---

    async def channel_exists(self, name: str) -> bool:
        async with self._db.session() as session:
            return await session.scalar(select(Channel.id).where(Channel.name == name)) is not None

    async def settings(self, name: str) -> ChatSettings:
        async with self._db.session() as session:
            channel = await _channel(session, name)
            return ChatSettings(channel.chat_slow_mode, channel.chat_followers_only)

    async def history(self, name: str, before: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
        """Up to `limit` messages older than id `before` (newest when None), oldest first; and the cursor to older ones."""
        async with self._db.session() as session:
            channel = await _channel(session, name)
            statement = (
                select(ChatMessage, User)
                .join(User, User.id == ChatMessage.user_id)
                .where(ChatMessage.channel_id == channel.id, ChatMessage.deleted_at.is_(None))
                .order_by(ChatMessage.id.desc())
                .limit(limit + 1)
            )
            if before is not None:
                statement = statement.where(ChatMessage.id < before)
            rows = (await session.execute(statement)).all()
            moderators = await _moderator_ids(session, channel.id)
            more = len(rows) > limit
            rows = rows[:limit]
            frames = [message_frame(m, u, _badges(channel, u, moderators)) for m, u in reversed(rows)]
        return frames, (rows[-1][0].id if more and rows else None)

    async def standing(self, name: str, who: Principal | None) -> Standing:
        if who is None:
            return Standing(False, False, "sign in to chat", "sign_in")
        async with self._db.session() as session:
            return self._judge(await _poster(session, name, who.user_id), who)

    def _judge(self, poster: _Poster, who: Principal) -> Standing:
        moderator = poster.moderator(who)
        if poster.banned and (poster.ban_until is None or poster.ban_until > self._now()):
            if poster.ban_until is None:
                return Standing(False, moderator, "you are banned from this chat", "banned")
            left = int((poster.ban_until - self._now()).total_seconds()) + 1
            return Standing(False, moderator, f"you are timed out for {left} more seconds", "banned")
        if poster.channel.chat_followers_only and not moderator and not poster.follows:
            return Standing(False, False, "this chat is for followers only: follow the channel to post", "followers_only")
        return Standing(True, moderator)

    # --- posting ---

    async def post(self, name: str, who: Principal | None, text: str) -> dict[str, Any]:
        """Store and announce a post; ChatProblem when it may not be posted. Returns its frame."""
        if who is None:
            raise ChatProblem("sign_in", "sign in to chat")
        text = protocol.clean_text(text, self.rules.max_length)
        wait = await self._limiter.hit(f"chat:{name}:{who.user_id}", self.rules.posts_per_period, self.rules.period)
        if wait:
            raise ChatProblem("rate_limited", f"you are posting too fast; wait {wait} s", retry_after=wait)
        attempt = 1
        while True:
            try:
                frame = await self._store(name, who, text)
            except OperationalError:
                # SQLite gave up waiting for its write lock (busy_timeout, 5 s: another process holds
                # it); nothing was written. One more try, then the client is told to try again.
                if attempt == WRITE_ATTEMPTS:
                    raise
                await asyncio.sleep(0.02 * attempt)
                attempt += 1
            else:
                await self._announce(name, frame)
                return frame

    async def _store(self, name: str, who: Principal, text: str) -> dict[str, Any]:
        """One query reads what decides the post, then the insert commits on its own. Each round trip to
        the database is a hop through the loop, which a busy node makes long: they are few, and none
        holds SQLite's write lock across one (see `Database.write`). A ban or a setting changed between
        the read and the insert is seen by the next post, as with READ COMMITTED in one transaction."""
        async with self._db.session() as session:
            poster = await _poster(session, name, who.user_id)
            standing = self._judge(poster, who)
            if not standing.can_post:
                raise ChatProblem(standing.code, standing.reason)
            channel, user, last = poster.channel, poster.user, poster.last_post
            if user is None:
                raise ChatProblem("sign_in", "your account no longer exists")
            now = self._now()
            if channel.chat_slow_mode and not standing.can_moderate and last is not None:
                if (now - last).total_seconds() < channel.chat_slow_mode:
                    wait = max(1, int(channel.chat_slow_mode - (now - last).total_seconds() + 0.999))
                    raise ChatProblem("slow_mode", f"slow mode is on: wait {wait} s between messages", retry_after=wait)
        fields = {"channel_id": channel.id, "user_id": user.id, "text": text, "created_at": now}
        [(message_id,)] = await self._db.write(insert(ChatMessage).values(**fields).returning(ChatMessage.id))
        row = ChatMessage(id=message_id, **fields)
        return message_frame(row, user, _badges(channel, user, {user.id} if poster.appointed else set()))

    async def announce_presence(self, name: str, username: str, joined: bool) -> None:
        """A signed-in user came into or left the channel's chat (anonymous readers are not announced)."""
        await self._announce(name, {"type": "presence", "user": username, "state": "joined" if joined else "left"})

    # --- moderation ---

    async def delete_message(self, name: str, message_id: int, by: Principal) -> None:
        async with self._db.session() as session:
            channel = await self._moderated(session, name, by)
            row = await session.get(ChatMessage, message_id)
            if row is None or row.channel_id != channel.id or row.deleted_at is not None:
                raise NotFound(f"there is no message {message_id} in this chat")
            row.deleted_at = self._now()
            row.deleted_by = by.user_id
            await session.commit()
        await self._announce(name, {"type": "deleted", "id": message_id, "by": by.username})

    async def ban(self, name: str, username: str, by: Principal, seconds: int | None, reason: str) -> BanView:
        """Keep `username` out of the chat: for `seconds` (a time-out) or, when None, until unbanned."""
        if seconds is not None and not 1 <= seconds <= self.rules.max_timeout:
            raise Invalid(f"a time-out lasts 1 to {self.rules.max_timeout} seconds")
        async with self._db.session() as session:
            channel = await self._moderated(session, name, by)
            user = await _user(session, username)
            if user.id == channel.owner_id or await _can_moderate(session, channel, _principal(user)):
                raise Forbidden("the channel's owner and its moderators cannot be banned or timed out")
            until = None if seconds is None else self._now() + timedelta(seconds=seconds)
            ban = await session.get(ChatBan, (channel.id, user.id))
            if ban is None:
                ban = ChatBan(channel_id=channel.id, user_id=user.id)
                session.add(ban)
            ban.until, ban.reason, ban.created_by, ban.created_at = until, reason, by.user_id, self._now()
            await _commit_or_conflict(session)
        if seconds is None:
            text = f"{username} was banned from the chat"
        else:
            text = f"{username} was timed out for {_duration(seconds)}"
        await self._announce(name, {"type": "notice", "text": text, "user": username, "action": "ban" if seconds is None else "timeout"})
        return BanView(username, until, reason)

    async def unban(self, name: str, username: str, by: Principal) -> None:
        async with self._db.session() as session:
            channel = await self._moderated(session, name, by)
            user = await _user(session, username)
            result = await session.execute(delete(ChatBan).where(ChatBan.channel_id == channel.id, ChatBan.user_id == user.id))
            await session.commit()
        if result.rowcount:  # type: ignore[attr-defined]
            await self._announce(name, {"type": "notice", "text": f"{username} may chat again", "user": username, "action": "unban"})

    async def bans(self, name: str, by: Principal) -> list[BanView]:
        async with self._db.session() as session:
            channel = await self._moderated(session, name, by)
            rows = (
                await session.execute(
                    select(ChatBan, User.username)
                    .join(User, User.id == ChatBan.user_id)
                    .where(ChatBan.channel_id == channel.id)
                    .where((ChatBan.until.is_(None)) | (ChatBan.until > self._now()))
                    .order_by(User.username)
                )
            ).all()
        return [BanView(username, ban.until, ban.reason) for ban, username in rows]

    async def change_settings(
        self, name: str, by: Principal, slow_mode: int | None, followers_only: bool | None
    ) -> ChatSettings:
        if slow_mode is not None and not 0 <= slow_mode <= self.rules.max_slow_mode:
            raise Invalid(f"slow mode is 0 (off) to {self.rules.max_slow_mode} seconds")
        async with self._db.session() as session:
            channel = await self._moderated(session, name, by)
            if slow_mode is not None:
                channel.chat_slow_mode = slow_mode
            if followers_only is not None:
                channel.chat_followers_only = followers_only
            settings = ChatSettings(channel.chat_slow_mode, channel.chat_followers_only)
            await session.commit()
        await self._announce(name, {"type": "settings", **settings.frame(self.rules.max_length)})
        return settings

    async def moderators(self, name: str) -> list[str]:
        async with self._db.session() as session:
            channel = await _channel(session, name)
            rows = await session.scalars(
                select(User.username)
                .join(ChannelModerator, ChannelModerator.user_id == User.id)
                .where(ChannelModerator.channel_id == channel.id)
                .order_by(User.username)
            )
            return list(rows)

    async def appoint(self, name: str, username: str, by: Principal, appoint: bool) -> list[str]:
        """Make `username` a moderator of the channel (or stop them being one): its owner or an admin only."""
        async with self._db.session() as session:
            channel = await _channel(session, name)
            if channel.owner_id != by.user_id and not by.at_least(Role.ADMIN):
                raise Forbidden("only the channel's owner or an admin appoints its moderators")
            user = await _user(session, username)
            if user.id == channel.owner_id:
                raise Invalid("the owner already moderates their own channel")
            existing = await session.get(ChannelModerator, (channel.id, user.id))
            if appoint and existing is None:
                session.add(ChannelModerator(channel_id=channel.id, user_id=user.id, created_at=self._now()))
            elif not appoint and existing is not None:
                await session.delete(existing)
            await _commit_or_conflict(session)
        action = "is now a moderator" if appoint else "is no longer a moderator"
        await self._announce(name, {"type": "notice", "text": f"{username} {action}", "user": username,
                                    "action": "moderator" if appoint else "unmoderator"})
        return await self.moderators(name)

    async def _moderated(self, session: AsyncSession, name: str, by: Principal) -> Channel:
        channel = await _channel(session, name)
        if not await _can_moderate(session, channel, by):
            raise Forbidden("only the channel's owner, its moderators and site moderators can do this")
        return channel


async def _commit_or_conflict(session: AsyncSession) -> None:
    try:
        await session.commit()
    except IntegrityError:
        raise Conflict("someone changed this at the same moment; try again") from None


async def _channel(session: AsyncSession, name: str) -> Channel:
    channel = await session.scalar(select(Channel).where(Channel.name == name))
    if channel is None:
        raise NotFound(f"there is no channel {name!r}")
    return channel


@dataclass(frozen=True, slots=True)
class _Poster:
    """Everything that decides whether one user may post in one channel, read in one query."""

    channel: Channel
    user: User | None  # None: the account is gone
    appointed: bool  # a moderator of this channel
    banned: bool
    ban_until: datetime | None  # None with `banned`: for good
    follows: bool
    last_post: datetime | None  # their newest message here (read only when slow mode is on)

    def moderator(self, who: Principal) -> bool:
        return _moderates_unappointed(self.channel, who) or self.appointed


async def _poster(session: AsyncSession, name: str, user_id: int) -> _Poster:
    of_pair = (ChannelModerator.channel_id == Channel.id, ChannelModerator.user_id == user_id)
    ban = (ChatBan.channel_id == Channel.id, ChatBan.user_id == user_id)
    last_post = select(func.max(ChatMessage.created_at)).where(
        ChatMessage.channel_id == Channel.id, ChatMessage.user_id == user_id).scalar_subquery()
    row = (await session.execute(
        select(
            Channel,
            User,
            select(ChannelModerator.user_id).where(*of_pair).exists(),
            select(ChatBan.user_id).where(*ban).exists(),
            select(ChatBan.until).where(*ban).scalar_subquery(),
            select(Follow.follower_id).where(Follow.follower_id == user_id, Follow.channel_id == Channel.id).exists(),
            case((Channel.chat_slow_mode > 0, last_post), else_=None),
        )
        .outerjoin(User, User.id == user_id)
        .where(Channel.name == name)
    )).first()
    if row is None:
        raise NotFound(f"there is no channel {name!r}")
    channel, user, appointed, banned, until, follows, last = row
    return _Poster(channel, user, bool(appointed), bool(banned), until, bool(follows), last)


async def _user(session: AsyncSession, username: str) -> User:
    user = await session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"there is no user {username!r}")
    return user


async def _moderator_ids(session: AsyncSession, channel_id: int) -> set[int]:
    return set(await session.scalars(select(ChannelModerator.user_id).where(ChannelModerator.channel_id == channel_id)))


def _moderates_unappointed(channel: Channel, who: Principal) -> bool:
    """The channel's owner and site moderators moderate every chat; others only where appointed."""
    return channel.owner_id == who.user_id or who.at_least(Role.MODERATOR)


async def _can_moderate(session: AsyncSession, channel: Channel, who: Principal) -> bool:
    if _moderates_unappointed(channel, who):
        return True
    return await session.get(ChannelModerator, (channel.id, who.user_id)) is not None


def _principal(user: User) -> Principal:
    return Principal(user.id, user.username, Role.parse(user.role), "")


def _badges(channel: Channel, user: User, moderators: set[int]) -> list[str]:
    if user.id == channel.owner_id:
        return ["broadcaster"]
    if user.id in moderators or Role.parse(user.role) >= Role.MODERATOR:
        return ["moderator"]
    return []


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
