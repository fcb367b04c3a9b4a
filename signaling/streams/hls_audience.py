"""Who watches a channel over HLS. WebRTC viewers are counted by the node that serves them; an HLS
player is a stream of HTTP requests that a CDN answers from its cache, so the origin cannot count
them. The watch page says "still watching" every BEAT seconds while HLS plays
(`POST /api/channels/{name}/watching` with a random session id); a session counts until TTL seconds
pass without a word (an expiring set per channel: in memory, or in Redis so every signaling instance
counts the same viewers).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from signaling.expiring_sets import ExpiringSets, MemoryExpiringSets, open_expiring_sets

BEAT = 10.0  # seconds between a player's "still watching"
TTL = 25.0  # seconds a session counts after its last word: two beats and a bit
MAX_PER_CHANNEL = 200_000  # sessions counted per channel; beyond it the oldest are forgotten


class HlsAudience:
    def __init__(self, sets: ExpiringSets) -> None:
        self._sets = sets

    @classmethod
    def in_memory(cls, clock: Callable[[], float] = time.time, max_per_channel: int = MAX_PER_CHANNEL) -> HlsAudience:
        return cls(MemoryExpiringSets(TTL, max_per_channel, clock))

    async def beat(self, channel: str, session: str) -> tuple[int, bool]:
        """`session` watches `channel`: the channel's count of HLS watchers now, and whether it is new."""
        count, new = await self._sets.touch(channel, (session,))
        return count, new > 0

    async def leave(self, channel: str, session: str) -> int:
        """`session` stopped watching: the channel's count now."""
        await self._sets.drop(channel, session)
        return await self.count(channel)

    async def counts(self, channels: list[str]) -> dict[str, int]:
        return await self._sets.counts(channels)

    async def count(self, channel: str) -> int:
        return (await self._sets.counts([channel]))[channel]

    async def close(self) -> None:
        await self._sets.close()


def open_hls_audience(bus_url: str, clock: Callable[[], float] = time.time) -> HlsAudience:
    return HlsAudience(open_expiring_sets(bus_url, "tally:watch:", TTL, MAX_PER_CHANNEL, clock))
