"""HLS viewers are counted from the players' "still watching": in memory for one process, in Redis for
many (here a private redis-server), with the same rules: a session counts for TTL seconds after its
last word, a channel's count is bounded, and the API takes the word only for a live channel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from redis_server import redis_server
from signaling.streams import hls_audience
from signaling.streams.hls_audience import TTL, HlsAudience, MemoryHlsAudience, RedisHlsAudience


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def audience(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[HlsAudience, Clock]]:
    clock = Clock()
    if request.param == "memory":
        yield MemoryHlsAudience(clock), clock
        return
    with redis_server(tmp_path) as server:
        store = RedisHlsAudience(server.url, clock)
        try:
            yield store, clock
        finally:
            await store.close()


async def test_sessions_count_until_they_fall_silent(audience: tuple[HlsAudience, Clock]) -> None:
    store, clock = audience
    assert await store.beat("cats", "a" * 16) == (1, True)
    assert await store.beat("cats", "a" * 16) == (1, False)  # the same player again
    assert await store.beat("cats", "b" * 16) == (2, True)
    assert await store.beat("dogs", "a" * 16) == (1, True)  # channels apart
    assert await store.counts(["cats", "dogs", "none"]) == {"cats": 2, "dogs": 1, "none": 0}
    clock.now += TTL - 1
    assert await store.beat("cats", "b" * 16) == (2, False)  # a's word is still fresh
    clock.now += 2
    assert await store.counts(["cats", "dogs"]) == {"cats": 1, "dogs": 0}  # a and the dog fell silent
    assert await store.count("cats") == 1
    clock.now += TTL
    assert await store.count("cats") == 0


async def test_a_channel_counts_at_most_its_bound(audience: tuple[HlsAudience, Clock],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    store, clock = audience
    monkeypatch.setattr(hls_audience, "MAX_PER_CHANNEL", 5)
    for i in range(8):
        clock.now += 0.01
        count, new = await store.beat("busy", f"session-{i:08d}")
        assert new and count == min(i + 1, 5)
    assert await store.count("busy") == 5


async def test_memory_forgets_silent_channels_before_refusing_new_ones() -> None:
    clock = Clock()
    store = MemoryHlsAudience(clock, max_channels=2)
    assert (await store.beat("one", "x" * 16))[0] == 1
    assert (await store.beat("two", "x" * 16))[0] == 1
    assert (await store.beat("three", "x" * 16)) == (0, False)  # both slots hold live channels
    clock.now += TTL + 1
    assert (await store.beat("three", "x" * 16)) == (1, True)  # the silent ones made room
