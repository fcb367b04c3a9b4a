"""Expiring sets (who watches over HLS, who is in a chat), in memory for one process and in Redis for
many (here a private redis-server), with the same rules: a member counts for `ttl` seconds after the
last word about it, `drop` takes it out at once, a set is bounded; and the two users of them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from redis_server import redis_server
from signaling.chat.presence import ChatPresence
from signaling.expiring_sets import ExpiringSets, MemoryExpiringSets, RedisExpiringSets
from signaling.streams.hls_audience import HlsAudience

TTL = 25.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


Make = Callable[..., ExpiringSets]


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Make, Clock]]:
    """Makes sets with a given bound on one clock, in memory or on one redis-server."""
    clock = Clock()
    if request.param == "memory":
        yield (lambda max_members=1000: MemoryExpiringSets(TTL, max_members, clock)), clock
        return
    made: list[ExpiringSets] = []
    with redis_server(tmp_path) as server:
        def redis_sets(max_members: int = 1000) -> ExpiringSets:
            made.append(RedisExpiringSets(server.url, f"test:{len(made)}:", TTL, max_members, clock))
            return made[-1]

        try:
            yield redis_sets, clock
        finally:
            for sets in made:
                await sets.close()


async def test_members_count_until_they_fall_silent_or_are_dropped(make: tuple[Make, Clock]) -> None:
    new_sets, clock = make
    sets = new_sets()
    assert await sets.touch("cats", ["a"]) == (1, 1)
    assert await sets.touch("cats", ["a"]) == (1, 0)  # the same one again
    assert await sets.touch("cats", ["b", "c"]) == (3, 2)
    assert await sets.touch("dogs", ["a"]) == (1, 1)  # sets apart
    assert await sets.touch("cats", []) == (3, 0)  # nothing to say
    assert await sets.counts(["cats", "dogs", "none"]) == {"cats": 3, "dogs": 1, "none": 0}
    clock.now += TTL - 1
    await sets.touch("cats", ["b"])
    clock.now += 2
    assert sorted(await sets.members("cats")) == ["b"]  # a and c fell silent; b spoke again
    assert await sets.counts(["dogs"]) == {"dogs": 0}
    await sets.drop("cats", "b")
    assert await sets.members("cats") == [] and await sets.counts(["cats"]) == {"cats": 0}


async def test_a_set_keeps_at_most_its_bound_the_latest_heard(make: tuple[Make, Clock]) -> None:
    new_sets, clock = make
    sets = new_sets(max_members=3)
    for i in range(6):
        clock.now += 0.01
        count, new = await sets.touch("busy", [f"m{i}"])
        assert new == 1 and count == min(i + 1, 3)
    assert sorted(await sets.members("busy")) == ["m3", "m4", "m5"]


async def test_memory_forgets_silent_sets_before_refusing_new_ones() -> None:
    clock = Clock()
    sets = MemoryExpiringSets(TTL, 10, clock, max_keys=2)
    assert await sets.touch("one", ["x"]) == (1, 1)
    assert await sets.touch("two", ["x"]) == (1, 1)
    assert await sets.touch("three", ["x"]) == (0, 0)  # both slots hold live sets
    clock.now += TTL + 1
    assert await sets.touch("three", ["x"]) == (1, 1)  # the silent ones made room


async def test_hls_audience_and_chat_presence_on_them(make: tuple[Make, Clock]) -> None:
    new_sets, clock = make
    audience, presence = HlsAudience(new_sets()), ChatPresence(new_sets())
    assert await audience.beat("cats", "s" * 16) == (1, True)
    assert await audience.beat("cats", "s" * 16) == (1, False)
    assert await audience.count("cats") == 1 and await audience.counts(["cats", "dogs"]) == {"cats": 1, "dogs": 0}
    await presence.here("cats", ["zoe", "amy", "bob"])
    assert await presence.listed("cats", 2) == (["amy", "bob"], 3)  # sorted, at most `limit`, the count in full
    await presence.gone("cats", "amy")
    assert await presence.listed("cats", 10) == (["bob", "zoe"], 2)
