"""Who watches a channel over HLS. WebRTC viewers are counted by the node that serves them; an HLS
player is a stream of HTTP requests that a CDN answers from its cache, so the origin cannot count
them. The watch page says "still watching" every BEAT seconds while HLS plays
(`POST /api/channels/{name}/watching` with a random session id); a session counts until TTL seconds
pass without a word. In memory for one process, in Redis (a sorted set per channel, scored by expiry)
when the bus is Redis, so every signaling instance counts the same viewers.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from bus import is_shared

BEAT = 10.0  # seconds between a player's "still watching"
TTL = 25.0  # seconds a session counts after its last word: two beats and a bit
MAX_PER_CHANNEL = 200_000  # sessions counted per channel; beyond it the oldest are forgotten


class HlsAudience(ABC):
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock

    @abstractmethod
    async def beat(self, channel: str, session: str) -> tuple[int, bool]:
        """`session` watches `channel`: the channel's count of HLS watchers now, and whether it is new."""

    @abstractmethod
    async def counts(self, channels: list[str]) -> dict[str, int]:
        """The HLS watchers of each channel (0 for none)."""

    async def count(self, channel: str) -> int:
        return (await self.counts([channel])).get(channel, 0)

    async def close(self) -> None:
        pass


class MemoryHlsAudience(HlsAudience):
    def __init__(self, clock: Callable[[], float] = time.time, max_channels: int = 10_000) -> None:
        super().__init__(clock)
        # channel -> session -> expiry, in the order of the last beat (so the oldest come first)
        self._seen: dict[str, dict[str, float]] = {}
        self._max_channels = max_channels

    def _prune(self, channel: str, now: float) -> dict[str, float]:
        sessions = self._seen.get(channel, {})
        while sessions:
            first = next(iter(sessions))
            if sessions[first] > now and len(sessions) <= MAX_PER_CHANNEL:
                break
            del sessions[first]
        if not sessions:
            self._seen.pop(channel, None)
        return sessions

    async def beat(self, channel: str, session: str) -> tuple[int, bool]:
        now = self.clock()
        sessions = self._prune(channel, now)
        if channel not in self._seen:
            if len(self._seen) >= self._max_channels:
                for name in list(self._seen):
                    self._prune(name, now)
                if len(self._seen) >= self._max_channels:
                    return 0, False  # every slot holds a channel with live watchers: this one goes uncounted
            sessions = self._seen[channel] = {}
        new = sessions.pop(session, None) is None  # to the end: the order stays by last beat
        sessions[session] = now + TTL
        return len(self._prune(channel, now)), new

    async def counts(self, channels: list[str]) -> dict[str, int]:
        now = self.clock()
        return {channel: len(self._prune(channel, now)) for channel in channels}


class RedisHlsAudience(HlsAudience):
    def __init__(self, url: str, clock: Callable[[], float] = time.time, prefix: str = "tally:watch:") -> None:
        super().__init__(clock)
        import redis.asyncio as aioredis

        self._client: Any = aioredis.Redis.from_url(url)
        self._prefix = prefix

    async def beat(self, channel: str, session: str) -> tuple[int, bool]:
        key, now = self._prefix + channel, self.clock()
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {session: now + TTL})
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zremrangebyrank(key, 0, -MAX_PER_CHANNEL - 1)  # the oldest beyond the bound
            pipe.zcard(key)
            pipe.expire(key, int(TTL) + 5)
            answers = await pipe.execute()
        return int(answers[3]), bool(answers[0])

    async def counts(self, channels: list[str]) -> dict[str, int]:
        if not channels:
            return {}
        now = self.clock()
        async with self._client.pipeline(transaction=False) as pipe:
            for channel in channels:
                pipe.zcount(self._prefix + channel, f"({now}", "+inf")
            answers = await pipe.execute()
        return {channel: int(n) for channel, n in zip(channels, answers, strict=True)}

    async def close(self) -> None:
        await self._client.aclose()


def open_hls_audience(bus_url: str, clock: Callable[[], float] = time.time) -> HlsAudience:
    return RedisHlsAudience(bus_url, clock) if is_shared(bus_url) else MemoryHlsAudience(clock)
