"""Each live stream's audience rolled up per minute: the peak and the viewer-seconds of every minute,
by transport, written to `audience_minutes` — what the analytics pages read, however many watched.

Counts are steps in time: the WebRTC count as the stream's node tells it (at most once a second, the
whole cluster's audience of the stream, relays included), the HLS count as the players' "still
watching" beats make it (sampled every `tick` seconds from the shared audience sets). Between two
counts the viewers are taken to be the earlier count, so viewer-seconds are exact for WebRTC and
within a beat for HLS. The rows of the minute under way are written every `tick` seconds too (the
page is live), replaced until the minute is over. The stream's origin node rolls it up; a stream that
moves to another node continues there under a new stream id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select

from lifecycle.tasks import Periodic
from signaling.db.database import Database
from signaling.db.models import AudienceMinute, Channel
from signaling.streams.hls_audience import HlsAudience

log = logging.getLogger(__name__)

TRANSPORTS = ("webrtc", "hls")
MAX_PENDING = 100_000  # minute rows waiting for the database (a long outage loses the oldest, says so)
MAX_EARLY = 1_000  # counts of streams not known yet, kept for when they are


@dataclass
class _Minute:
    start: float  # the minute's first second (unix time)
    peak: int
    seconds: float  # viewer-seconds so far


@dataclass
class _Track:
    """One stream's audience over one transport: the count now, since when, and the minute under way."""

    channel_id: int
    count: int
    since: float
    minute: _Minute


class AudienceRollup:
    def __init__(self, db: Database, hls: HlsAudience, clock: Callable[[], float] = time.time, tick: float = 10.0) -> None:
        self._db = db
        self._hls = hls
        self._clock = clock
        self._tick = tick
        self._streams: dict[str, tuple[str, int]] = {}  # stream id -> (channel name, channel id), live here
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._done: list[tuple[str, str, _Track, _Minute]] = []  # minutes over, not written yet
        # A count can come before the stream's start is known here (the node tells a moved stream's
        # audience at once): the last one of each such stream, applied when the start comes.
        self._early: dict[tuple[str, str], int] = {}
        self._periodic = Periodic("audience-rollup", tick, self._turn)
        self._writing = asyncio.Lock()

    # --- what the streams tell (StreamWatcher, and the StreamService's counts) ---

    async def stream_started(self, room: str, stream: str) -> None:
        async with self._db.session() as session:
            channel_id = await session.scalar(select(Channel.id).where(Channel.name == room))
        if channel_id is not None:
            self._streams[stream] = (room, channel_id)
            for transport in TRANSPORTS:
                self.observe(stream, transport, self._early.pop((stream, transport), 0))

    async def stream_ended(self, room: str, stream: str) -> None:
        if self._streams.pop(stream, None) is None:
            return
        now = self._clock()
        for transport in TRANSPORTS:
            track = self._tracks.pop((stream, transport), None)
            if track is not None:
                self._advance(stream, transport, track, now)
                self._done.append((stream, transport, track, track.minute))
        await self.flush()

    def observe(self, stream: str, transport: str, viewers: int) -> None:
        """The stream's audience over `transport` is `viewers` from now on."""
        known = self._streams.get(stream)
        if known is None:  # not known yet (or not live here: a relay's room, or over)
            if len(self._early) >= MAX_EARLY:
                self._early.clear()
            self._early[(stream, transport)] = viewers
            return
        now = self._clock()
        key = (stream, transport)
        track = self._tracks.get(key)
        if track is None:
            start = now - now % 60
            self._tracks[key] = _Track(known[1], viewers, now, _Minute(start, viewers, 0.0))
            return
        self._advance(stream, transport, track, now)
        track.count = viewers
        track.minute.peak = max(track.minute.peak, viewers)

    def _advance(self, stream: str, transport: str, track: _Track, now: float) -> None:
        """Count the viewers up to `now`, closing every minute passed on the way."""
        while now >= track.minute.start + 60:
            end = track.minute.start + 60
            track.minute.seconds += track.count * max(0.0, end - track.since)
            if track.minute.seconds or track.minute.peak:
                self._done.append((stream, transport, track, track.minute))
            track.minute = _Minute(end, track.count, 0.0)
            track.since = end
        track.minute.seconds += track.count * max(0.0, now - track.since)
        track.since = now

    # --- writing ---

    async def flush(self) -> None:
        """Write the minutes that are over and the ones under way (replacing what an earlier flush wrote)."""
        async with self._writing:  # one flush at a time (the tick, a stream's end, the close)
            await self._flush()

    async def _flush(self) -> None:
        now = self._clock()
        for (stream, transport), track in self._tracks.items():
            self._advance(stream, transport, track, now)  # first: it closes minutes into `_done`
        done, self._done = self._done, []  # minutes that close while this writes wait for the next flush
        rows = [(stream, transport, track.channel_id, minute) for stream, transport, track, minute in done]
        rows += [(stream, transport, track.channel_id, track.minute) for (stream, transport), track in self._tracks.items()
                 if track.minute.seconds or track.minute.peak]
        if not rows:
            return
        try:
            async with self._db.session() as session:
                for stream, transport, channel_id, minute in rows:
                    at = datetime.fromtimestamp(minute.start, timezone.utc)
                    await session.merge(AudienceMinute(stream_id=stream, minute=at, transport=transport,
                                                       channel_id=channel_id, peak=minute.peak,
                                                       viewer_seconds=round(minute.seconds, 3)))
        except Exception as exc:  # the database is away: keep what is over for the next flush
            log.warning("audience rollup: %d minute rows not written: %s", len(rows), exc)
            self._done = done + self._done
            if len(self._done) > MAX_PENDING:
                del self._done[:len(self._done) - MAX_PENDING]

    async def sample_hls(self) -> None:
        """Take the HLS counts of the streams live here (the players' beats, shared by every door)."""
        if self._streams:
            counts = await self._hls.counts(sorted({room for room, _ in self._streams.values()}))
            for stream, (room, _) in list(self._streams.items()):
                self.observe(stream, "hls", counts.get(room, 0))

    async def _turn(self) -> None:
        await self.sample_hls()
        await self.flush()

    def start(self) -> None:
        self._periodic.start()

    async def close(self) -> None:
        await self._periodic.close()
        await self.flush()
