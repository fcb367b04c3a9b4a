"""Channels as the API shows them, follows, and stream keys."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from signaling.accounts.names import username_problem
from signaling.auth import secrets
from signaling.auth.roles import Principal, Role
from signaling.db.database import Database, insert_new
from signaling.db.models import Channel, Follow, User
from signaling.errors import Forbidden, Invalid, NotFound
from signaling.notifications.service import follow_job


@dataclass(frozen=True, slots=True)
class ChannelView:
    channel: Channel
    display_name: str
    followers: int
    following: bool | None
    bell: str | None = None  # the viewer's bell for it, when following


@dataclass(frozen=True, slots=True)
class StreamKey:
    key: str | None
    hint: str
    created_at: datetime | None


def _followers() -> Select[int, int]:
    return select(Follow.channel_id, func.count().label("n")).group_by(Follow.channel_id)


class ChannelService:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def exists(self, name: str) -> bool:
        if username_problem(name) is not None:
            return False  # not a name a channel could have: no need to ask the database
        async with self._db.session() as session:
            return await session.scalar(select(Channel.id).where(Channel.name == name)) is not None

    async def get(self, name: str, viewer: Principal | None = None) -> ChannelView:
        views = await self._views(select(Channel).where(Channel.name == name), viewer)
        if not views:
            raise NotFound(f"there is no channel {name!r}")
        return views[0]

    async def directory(
        self, viewer: Principal | None, *, live: bool | None, query: str, offset: int, limit: int
    ) -> tuple[list[ChannelView], int | None]:
        statement = select(Channel)
        if live is not None:
            statement = statement.where(Channel.is_live.is_(live))
        if query:
            pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            statement = statement.where(
                Channel.name.ilike(pattern, escape="\\") | Channel.title.ilike(pattern, escape="\\")
            )
        statement = statement.order_by(Channel.is_live.desc(), Channel.viewer_count.desc(), Channel.name)
        views = await self._views(statement.offset(offset).limit(limit + 1), viewer)
        more = len(views) > limit
        return views[:limit], (offset + limit if more else None)

    async def following(self, viewer: Principal) -> list[ChannelView]:
        statement = (
            select(Channel)
            .join(Follow, Follow.channel_id == Channel.id)
            .where(Follow.follower_id == viewer.user_id)
            .order_by(Channel.is_live.desc(), Channel.name)
        )
        return await self._views(statement, viewer)

    async def _views(self, statement: Select[Channel], viewer: Principal | None) -> list[ChannelView]:
        counts = _followers().subquery()
        full = (
            statement.add_columns(User.display_name, func.coalesce(counts.c.n, 0))
            .join(User, User.id == Channel.owner_id)
            .outerjoin(counts, counts.c.channel_id == Channel.id)
        )
        async with self._db.session() as session:
            rows = (await session.execute(full)).all()
            followed: dict[int, str] = {}
            if viewer is not None and rows:
                followed = {
                    row[0]: row[1]
                    for row in await session.execute(
                        select(Follow.channel_id, Follow.notify).where(
                            Follow.follower_id == viewer.user_id, Follow.channel_id.in_([r[0].id for r in rows])
                        )
                    )
                }
        return [
            ChannelView(
                channel=row[0],
                display_name=row[1],
                followers=int(row[2]),
                following=(row[0].id in followed) if viewer is not None else None,
                bell=followed.get(row[0].id),
            )
            for row in rows
        ]

    async def update(
        self,
        name: str,
        by: Principal,
        *,
        title: str | None,
        description: str | None,
        tags: list[str] | None,
        avatar_url: str | None,
        record_streams: bool | None = None,
        recording_retention_days: int | None = None,
    ) -> ChannelView:
        async with self._db.session() as session:
            channel = await managed_channel(session, name, by, "change it")
            if title is not None:
                channel.title = title
            if description is not None:
                channel.description = description
            if tags is not None:
                channel.tags = tags
            if avatar_url is not None:
                channel.avatar_url = avatar_url
            if record_streams is not None:
                channel.record_streams = record_streams
            if recording_retention_days is not None:
                channel.recording_retention_days = recording_retention_days
            channel.updated_at = self._now()
        return await self.get(name, by)

    async def follow(self, name: str, viewer: Principal, follow: bool, bell: str | None = None) -> ChannelView:
        """Follow (with the bell at `bell`, "all" for a new follow when not given) or unfollow."""
        async with self._db.session() as session:
            channel = await session.scalar(select(Channel).where(Channel.name == name))
            if channel is None:
                raise NotFound(f"there is no channel {name!r}")
            if channel.owner_id == viewer.user_id:
                raise Invalid("you cannot follow your own channel")
            existing = await session.get(Follow, (viewer.user_id, channel.id))
            if follow and existing is None:
                now = self._now()
                added = await insert_new(session, Follow, {"follower_id": viewer.user_id, "channel_id": channel.id,
                                                           "created_at": now, "notify": bell or "all"})
                if added:  # (else a concurrent identical PUT got there first: following is following)
                    await follow_job(session, channel.id, viewer.user_id, now)  # with the follow, or not at all
            elif follow and existing is not None and bell is not None:
                existing.notify = bell
            elif not follow and existing is not None:
                await session.delete(existing)
        return await self.get(name, viewer)

    async def show_stream_key(self, owner: Principal) -> StreamKey:
        """The key's hint; on the very first call, a new key itself (it is never retrievable later)."""
        async with self._db.session() as session:
            channel = await self._owned(session, owner)
            if channel.stream_key_hash is not None:
                return StreamKey(key=None, hint=channel.stream_key_hint, created_at=channel.stream_key_created_at)
        return await self.rotate_stream_key(owner)

    async def rotate_stream_key(self, owner: Principal) -> StreamKey:
        issued = secrets.issue(secrets.STREAM_KEY_PREFIX)
        async with self._db.session() as session:
            channel = await self._owned(session, owner)
            channel.stream_key_hash = issued.digest
            channel.stream_key_hint = issued.hint
            channel.stream_key_created_at = self._now()
            return StreamKey(key=issued.value, hint=issued.hint, created_at=channel.stream_key_created_at)

    async def _owned(self, session: AsyncSession, owner: Principal) -> Channel:
        channel = await session.scalar(select(Channel).where(Channel.owner_id == owner.user_id))
        if channel is None:
            raise NotFound("you have no channel")
        return channel

    async def channel_for_stream_key(self, key: str) -> Channel | None:
        """The channel a stream key publishes to (WHIP ingest authenticates with it)."""
        if not key.startswith(secrets.STREAM_KEY_PREFIX):
            return None
        async with self._db.session() as session:
            return await session.scalar(select(Channel).where(Channel.stream_key_hash == secrets.digest(key)))


async def managed_channel(session: AsyncSession, name: str, by: Principal, action: str) -> Channel:
    """The channel `name`, if `by` owns it or is an admin (404 or 403 otherwise; `action` says what for)."""
    channel = await session.scalar(select(Channel).where(Channel.name == name))
    if channel is None:
        raise NotFound(f"there is no channel {name!r}")
    if channel.owner_id != by.user_id and not by.at_least(Role.ADMIN):
        raise Forbidden(f"only the channel's owner or an admin can {action}")
    return channel
