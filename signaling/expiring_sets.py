"""Sets whose members expire: who is still watching a channel over HLS, who is in its chat. A member
stays until `ttl` seconds pass without a word about it; a set holds at most `max_members` (the ones
heard of longest ago go first). In memory for one process; a Redis sorted set per key (member ->
when it expires) when the bus is Redis, so every process sees the same members.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

from bus import is_shared


class ExpiringSets(ABC):
    def __init__(self, ttl: float, max_members: int, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.max_members = max_members
        self.clock = clock

    @abstractmethod
    async def touch(self, key: str, members: Iterable[str]) -> tuple[int, int]:
        """Word about `members` of `key`'s set: (how many members it has now, how many of them are new)."""

    @abstractmethod
    async def drop(self, key: str, member: str) -> None: ...

    @abstractmethod
    async def members(self, key: str, limit: int | None = None) -> list[str]:
        """The members (at most `limit`: the ones heard of longest ago first)."""

    @abstractmethod
    async def counts(self, keys: list[str]) -> dict[str, int]:
        """How many members each set has (0 for none)."""

    async def close(self) -> None:
        pass


class MemoryExpiringSets(ExpiringSets):
    def __init__(self, ttl: float, max_members: int, clock: Callable[[], float] = time.time,
                 max_keys: int = 10_000) -> None:
        super().__init__(ttl, max_members, clock)
        self._sets: dict[str, dict[str, float]] = {}  # key -> member -> expiry, the oldest word first
        self._max_keys = max_keys

    def _prune(self, key: str, now: float) -> dict[str, float]:
        members = self._sets.get(key, {})
        while members:
            first = next(iter(members))
            if members[first] > now and len(members) <= self.max_members:
                break
            del members[first]
        if not members:
            self._sets.pop(key, None)
        return members

    async def touch(self, key: str, members: Iterable[str]) -> tuple[int, int]:
        now = self.clock()
        kept = self._prune(key, now)
        if key not in self._sets:
            if len(self._sets) >= self._max_keys:
                for other in list(self._sets):
                    self._prune(other, now)
                if len(self._sets) >= self._max_keys:
                    return 0, 0  # every slot holds a live set: this one goes uncounted
            kept = self._sets[key] = {}
        new = 0
        for member in members:
            new += kept.pop(member, None) is None  # to the end: the order stays by last word
            kept[member] = now + self.ttl
        return len(self._prune(key, now)), new

    async def drop(self, key: str, member: str) -> None:
        kept = self._sets.get(key)
        if kept is not None:
            kept.pop(member, None)
            if not kept:
                del self._sets[key]

    async def members(self, key: str, limit: int | None = None) -> list[str]:
        members = list(self._prune(key, self.clock()))
        return members if limit is None else members[:limit]

    async def counts(self, keys: list[str]) -> dict[str, int]:
        now = self.clock()
        return {key: len(self._prune(key, now)) for key in keys}


class RedisExpiringSets(ExpiringSets):
    def __init__(self, url: str, prefix: str, ttl: float, max_members: int, clock: Callable[[], float] = time.time) -> None:
        super().__init__(ttl, max_members, clock)
        import redis.asyncio as aioredis

        # A Redis that does not answer must not hold up the pages that show these counts.
        self._client: Any = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self._prefix = prefix

    async def touch(self, key: str, members: Iterable[str]) -> tuple[int, int]:
        names = list(members)
        name, now = self._prefix + key, self.clock()
        if not names:
            return (await self.counts([key]))[key], 0
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(name, "-inf", now)  # the expired first, so one coming back counts as new
            pipe.zadd(name, {member: now + self.ttl for member in names})
            pipe.zremrangebyrank(name, 0, -self.max_members - 1)  # the oldest beyond the bound
            pipe.zcard(name)
            pipe.expire(name, int(self.ttl) + 5)
            _, added, _, count, _ = await pipe.execute()
        return int(count), int(added)

    async def drop(self, key: str, member: str) -> None:
        await self._client.zrem(self._prefix + key, member)

    async def members(self, key: str, limit: int | None = None) -> list[str]:
        found = await self._client.zrangebyscore(self._prefix + key, f"({self.clock()}", "+inf",
                                                 *((0, limit) if limit is not None else ()))
        return [m.decode() if isinstance(m, bytes) else str(m) for m in found]

    async def counts(self, keys: list[str]) -> dict[str, int]:
        if not keys:
            return {}
        now = self.clock()
        async with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zcount(self._prefix + key, f"({now}", "+inf")
            answers = await pipe.execute()
        return {key: int(n) for key, n in zip(keys, answers, strict=True)}

    async def close(self) -> None:
        await self._client.aclose()


def open_expiring_sets(bus_url: str, prefix: str, ttl: float, max_members: int,
                       clock: Callable[[], float] = time.time) -> ExpiringSets:
    if is_shared(bus_url):
        return RedisExpiringSets(bus_url, prefix, ttl, max_members, clock)
    return MemoryExpiringSets(ttl, max_members, clock)
