"""Streams as the rest of the platform sees them: sessions in the database, the channel's live state
and viewer count, and events on the bus (`stream.started`, `stream.ended`, `stream.viewers`) for
recording, HLS, chat and notifications to consume.

It is the SFU node's `NodeEvents`: the node calls it, in order, from its own event task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bus import Bus, Message
from sfu.media_format import MediaFormat
from signaling.db.database import Database
from signaling.db.models import Channel, StreamSession
from signaling.errors import Conflict, NotFound
from signaling.notifications.service import NotifyRules, stream_ended_job, stream_live_job
from signaling.schedule.service import link_stream
from signaling.streams.hls_audience import HlsAudience

log = logging.getLogger(__name__)


class StreamWatcher(Protocol):
    """Something in this process that follows the streams of this node (the recorder)."""

    async def stream_started(self, room: str, stream: str) -> None: ...

    async def stream_ended(self, room: str, stream: str) -> None: ...


class StreamService:
    def __init__(self, db: Database, bus: Bus, node_id: str, clock: Callable[[], float] = time.time,
                 hls_audience: HlsAudience | None = None, notify: NotifyRules = NotifyRules()) -> None:
        self.notify = notify
        self.watchers: list[StreamWatcher] = []
        self.hls_audience = hls_audience or HlsAudience.in_memory(clock)
        self._told_at: dict[str, float] = {}  # channel -> when HLS newcomers were last told (bounded)
        # Is the channel claimed by another node (its stream went on there)? Set in a cluster.
        self.claimed_elsewhere: Callable[[str], Awaitable[bool]] | None = None
        # Told every WebRTC count of a stream live here (the analytics' per-minute rollup).
        self.on_viewers: Callable[[str, str, int], None] | None = None
        self._db = db
        self._bus = bus
        self._node = node_id
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def recover(self) -> int:
        """End what this node left open when it last died; the number of streams closed."""
        now = self._now()
        async with self._db.session() as session:
            open_streams = list(
                await session.scalars(
                    select(StreamSession).where(StreamSession.node == self._node, StreamSession.ended_at.is_(None))
                )
            )
            for stream in open_streams:
                stream.ended_at = now
                stream.end_reason = "node restarted"
                stream.viewers = 0
                await session.execute(
                    update(Channel).where(Channel.id == stream.channel_id).values(is_live=False, live_since=None, viewer_count=0)
                )
            await session.commit()
        return len(open_streams)

    async def stream_started(self, room: str, stream: str, user: str | None, formats: list[MediaFormat]) -> None:
        now = self._now()
        codecs = {f.kind: f.codec for f in formats}
        async with self._db.session() as session:
            channel = await session.scalar(select(Channel).where(Channel.name == room))
            if channel is None:
                log.warning("stream %s started in unknown channel %s", stream, room)
                return
            # One live stream per channel in the whole cluster: one its publisher left on another node
            # (which died, or lost it to this takeover) ends here.
            for stale in await session.scalars(
                select(StreamSession).where(StreamSession.channel_id == channel.id, StreamSession.ended_at.is_(None))
            ):
                stale.ended_at = now
                stale.end_reason = f"continued on node {self._node}"[:64]
                stale.viewers = 0
            session.add(
                StreamSession(
                    id=stream,
                    channel_id=channel.id,
                    node=self._node,
                    started_at=now,
                    video_codec=codecs.get("video", ""),
                    audio_codec=codecs.get("audio", ""),
                )
            )
            channel.is_live = True
            channel.live_since = now
            channel.viewer_count = 0
            await link_stream(session, channel.id, stream, now)
            stream_live_job(session, channel.id, stream, now, self.notify)
            await session.commit()
        await self._bus.publish(
            Message("stream.started", {"channel": room, "stream": stream, "node": self._node, "codecs": codecs})
        )
        for watcher in self.watchers:
            await _tell(watcher.stream_started(room, stream))

    async def stream_ended(self, room: str, stream: str, reason: str, peak_viewers: int) -> None:
        try:
            await self._end(room, stream, reason, peak_viewers)
        finally:  # the recorder, the ladder and the claim hear of it even when the database did not
            for watcher in self.watchers:
                await _tell(watcher.stream_ended(room, stream))

    async def open_streams(self) -> list[tuple[str, str, str]]:
        """(stream id, channel name, node) of every stream not ended, on any node."""
        async with self._db.session() as session:
            rows = await session.execute(
                select(StreamSession.id, Channel.name, StreamSession.node)
                .join(Channel, Channel.id == StreamSession.channel_id)
                .where(StreamSession.ended_at.is_(None))
            )
            return [(row[0], row[1], row[2]) for row in rows]

    async def orphaned_channels(self) -> list[str]:
        """Channels marked live with no open stream on any node (a takeover that failed after the
        stream it superseded had ended)."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(Channel.name).where(
                    Channel.is_live.is_(True),
                    ~select(StreamSession.id).where(StreamSession.channel_id == Channel.id,
                                                    StreamSession.ended_at.is_(None)).exists(),
                )
            )
            return list(rows)

    async def end_orphan(self, room: str, reason: str) -> bool:
        """Take channel `room` offline if it still has no open stream; told like any stream's end."""
        async with self._db.session() as session:
            channel = await session.scalar(select(Channel).where(Channel.name == room))
            if channel is None or not channel.is_live or await _another_open(session, room, ""):
                return False
            last = await session.scalar(
                select(StreamSession.id).where(StreamSession.channel_id == channel.id)
                .order_by(StreamSession.started_at.desc()).limit(1)
            )
            channel.is_live, channel.live_since, channel.viewer_count = False, None, 0
            await session.commit()
        await self._bus.publish(Message("stream.ended", {"channel": room, "stream": last or "", "reason": reason}))
        return True

    async def end_lost(self, stream: str, room: str, reason: str) -> bool:
        """End `stream`, whose node is gone, unless it ended meanwhile; told like any stream's end."""
        return await self._end(room, stream, reason, lost=True)

    async def _end(self, room: str, stream: str, reason: str, peak_viewers: int = 0, lost: bool = False) -> bool:
        """Close the stream's record and, if it was its channel's live stream, the channel, and tell the
        bus. A stream that went on on another node (a takeover there ended this one's record) leaves its
        channel live. A `lost` stream that is unknown or already over changes nothing (False)."""
        now = self._now()
        # A stream that ends because another node took its channel over went on there, even when that
        # node has not written its own stream yet: the channel stays live, and nobody is told it ended.
        taken_over = not lost and self.claimed_elsewhere is not None and await _asked(self.claimed_elsewhere(room))
        async with self._db.session() as session:
            record = await session.get(StreamSession, stream)
            if lost and (record is None or record.ended_at is not None):
                return False
            if record is not None:
                record.ended_at = now
                record.end_reason = reason[:64]
                record.viewers = 0
                record.peak_viewers = max(record.peak_viewers, peak_viewers)
            superseded = taken_over or await _another_open(session, room, stream)
            if not superseded:
                await session.execute(
                    update(Channel).where(Channel.name == room).values(is_live=False, live_since=None, viewer_count=0)
                )
                if record is not None:
                    stream_ended_job(session, record.channel_id, stream, (now - record.started_at).total_seconds(),
                                     now, self.notify)
            await session.commit()
        if not superseded:
            await self._bus.publish(Message("stream.ended", {"channel": room, "stream": stream, "reason": reason}))
        return True

    async def viewers_changed(self, room: str, stream: str, viewers: int) -> None:
        """The node tells at most one count per stream per second, however many come and go. The channel
        keeps its WebRTC viewers; its pages hear them with the HLS viewers added."""
        if self.on_viewers is not None:
            self.on_viewers(stream, "webrtc", viewers)
        hls = await self.hls_audience.count(room)
        async with self._db.session() as session:
            record = await session.get(StreamSession, stream)
            if record is None or record.ended_at is not None:
                return  # a stream that is over (or went on elsewhere) no longer speaks for its channel
            record.viewers = viewers
            record.peak_viewers = max(record.peak_viewers, viewers + hls)
            await session.execute(update(Channel).where(Channel.name == room).values(viewer_count=viewers))
            await session.commit()
        await self._bus.publish(Message("stream.viewers", {"channel": room, "stream": stream, "viewers": viewers + hls}))

    async def watching(self, room: str, session_id: str, leaving: bool = False) -> int:
        """An HLS player of `room` says it is still watching: the channel's HLS viewers now. A new one is
        told to the channel's pages at once (one that leaves shows at their next look)."""
        async with self._db.session() as session:
            found = (await session.execute(select(Channel.id, Channel.is_live, Channel.viewer_count)
                                           .where(Channel.name == room))).first()
        if found is None:
            raise NotFound(f"there is no channel {room!r}")
        channel_id, live, webrtc = found
        if leaving:
            return await self.hls_audience.leave(room, session_id)
        if not live:
            raise Conflict("the channel is not live")
        count, new = await self.hls_audience.beat(room, session_id)
        if new and self._may_tell(room):
            # At most once a second per channel (as a node tells its WebRTC count): the stream's peak
            # counts HLS viewers too, and the channel's pages hear of the newcomers.
            await self._db.write(
                update(StreamSession)
                .where(StreamSession.channel_id == channel_id, StreamSession.ended_at.is_(None),
                       StreamSession.peak_viewers < webrtc + count)
                .values(peak_viewers=webrtc + count))
            await self._bus.publish(Message("stream.viewers", {"channel": room, "stream": "", "viewers": webrtc + count}))
        return count

    def _may_tell(self, room: str) -> bool:
        now = self._clock()
        if now - self._told_at.get(room, 0.0) < 1.0:
            return False
        if len(self._told_at) >= 10_000:
            self._told_at = {r: t for r, t in self._told_at.items() if now - t < 1.0}
        self._told_at[room] = now
        return True

    async def history(self, channel_id: int, limit: int = 20) -> list[StreamSession]:
        async with self._db.session() as session:
            rows = await session.scalars(
                select(StreamSession)
                .where(StreamSession.channel_id == channel_id)
                .order_by(StreamSession.started_at.desc())
                .limit(limit)
            )
            return list(rows)


async def _asked(question: Awaitable[bool], timeout: float = 0.5) -> bool:
    """The answer, or False when it does not come in time or at all (this runs on the node's one event
    task: a slow registry must not hold up every stream event)."""
    try:
        async with asyncio.timeout(timeout):
            return await question
    except Exception:  # noqa: BLE001 - whatever went wrong, it is no answer
        return False


async def _tell(call: Awaitable[None]) -> None:
    try:
        await call
    except Exception:
        log.exception("a stream watcher failed")


async def _another_open(session: AsyncSession, room: str, stream: str) -> bool:
    """Is a stream of channel `room` other than `stream` still open (live on some node)?"""
    found = await session.scalar(
        select(StreamSession.id)
        .join(Channel, Channel.id == StreamSession.channel_id)
        .where(Channel.name == room, StreamSession.ended_at.is_(None), StreamSession.id != stream)
        .limit(1)
    )
    return found is not None
