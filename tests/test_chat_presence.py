"""Who is in a chat, kept in memory for one process and in Redis for many (here a private
redis-server): names stay listed TTL seconds after the last word about them, a hub's "gone" drops one
at once, and a channel's list is bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from redis_server import redis_server
from signaling.chat import presence
from signaling.chat.presence import TTL, ChatPresence, MemoryChatPresence, RedisChatPresence


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[ChatPresence, Clock]]:
    clock = Clock()
    if request.param == "memory":
        yield MemoryChatPresence(clock), clock
        return
    with redis_server(tmp_path) as server:
        kept = RedisChatPresence(server.url, clock)
        try:
            yield kept, clock
        finally:
            await kept.close()


async def test_names_are_listed_until_they_fall_silent_or_leave(store: tuple[ChatPresence, Clock]) -> None:
    kept, clock = store
    await kept.here("cats", ["zoe", "amy"])
    await kept.here("dogs", ["bob"])
    assert await kept.listed("cats", 10) == (["amy", "zoe"], 2)
    assert await kept.listed("cats", 1) == (["amy"], 2)  # at most `limit` names, the count in full
    clock.now += TTL - 1
    await kept.here("cats", ["zoe"])  # another hub's refresh
    clock.now += 2
    assert await kept.listed("cats", 10) == (["zoe"], 1)
    assert await kept.listed("dogs", 10) == ([], 0)
    await kept.gone("cats", "zoe")
    assert await kept.listed("cats", 10) == ([], 0)
    await kept.here("cats", [])  # nothing to say: fine
    assert await kept.listed("nobody", 10) == ([], 0)


async def test_a_channel_lists_at_most_its_bound(store: tuple[ChatPresence, Clock], monkeypatch: pytest.MonkeyPatch) -> None:
    kept, clock = store
    monkeypatch.setattr(presence, "MAX_PER_CHANNEL", 3)
    for i in range(6):
        clock.now += 0.01
        await kept.here("busy", [f"user{i}"])
    assert await kept.listed("busy", 10) == (["user3", "user4", "user5"], 3)  # the latest words kept
