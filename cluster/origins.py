"""Which node is a channel's origin: one publisher per channel across the cluster.

A node claims a channel before it takes the channel's publisher, keeps the claim alive while the
stream lives (ORIGIN_TTL, refreshed every second) and lets go when the stream ends. A claim held by
another node is refused, unless the caller knows that node is dead (`steal_from`: a front door that
found nobody serving it): then the claim passes at once instead of after ORIGIN_TTL.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cluster.registry import RegistryError

ORIGIN_TTL = 5.0  # seconds a claim lives without being refreshed


class OriginLocks(ABC):
    @abstractmethod
    async def claim(self, channel: str, node_id: str, steal_from: str | None = None) -> str:
        """Make `node_id` the channel's origin unless another node holds it (or `steal_from` does);
        the origin after the attempt."""

    @abstractmethod
    async def owner(self, channel: str) -> str | None: ...

    @abstractmethod
    async def refresh(self, node_id: str, channels: Iterable[str]) -> list[str]:
        """Keep `node_id`'s claims on `channels` alive (and claim those nobody holds: the node carries
        them); the channels among them another node holds (lost to it)."""

    @abstractmethod
    async def release(self, channel: str, node_id: str) -> None:
        """Let go of the channel, if `node_id` holds it."""

    async def close(self) -> None:
        """Let go of connections."""


class MemoryOriginLocks(OriginLocks):
    def __init__(self, clock: Callable[[], float] = time.monotonic, ttl: float = ORIGIN_TTL) -> None:
        self._clock = clock
        self._ttl = ttl
        self._held: dict[str, tuple[str, float]] = {}

    def _current(self, channel: str) -> str | None:
        held = self._held.get(channel)
        if held is None or held[1] <= self._clock():
            self._held.pop(channel, None)
            return None
        return held[0]

    async def claim(self, channel: str, node_id: str, steal_from: str | None = None) -> str:
        current = self._current(channel)
        if current is None or current == node_id or (steal_from is not None and current == steal_from):
            self._held[channel] = (node_id, self._clock() + self._ttl)
            return node_id
        return current

    async def owner(self, channel: str) -> str | None:
        return self._current(channel)

    async def refresh(self, node_id: str, channels: Iterable[str]) -> list[str]:
        lost = []
        for channel in channels:
            if self._current(channel) in (None, node_id):
                self._held[channel] = (node_id, self._clock() + self._ttl)
            else:
                lost.append(channel)
        return lost

    async def release(self, channel: str, node_id: str) -> None:
        if self._current(channel) == node_id:
            del self._held[channel]


_CLAIM = """
local current = redis.call('GET', KEYS[1])
if (not current) or current == ARGV[1] or (ARGV[3] ~= '' and current == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return current
"""
_REFRESH = """
local lost = {}
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  if (not current) or current == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  else
    table.insert(lost, i)
  end
end
return lost
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisOriginLocks(OriginLocks):
    def __init__(self, url: str, prefix: str = "tally:", ttl: float = ORIGIN_TTL) -> None:
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=2.0, decode_responses=True
        )
        self._prefix = f"{prefix}origin:"
        self._ttl_ms = round(ttl * 1000)
        self._claim = self._client.register_script(_CLAIM)
        self._refresh = self._client.register_script(_REFRESH)
        self._release = self._client.register_script(_RELEASE)

    async def claim(self, channel: str, node_id: str, steal_from: str | None = None) -> str:
        try:
            return str(await self._claim(keys=[self._prefix + channel], args=[node_id, self._ttl_ms, steal_from or ""]))
        except RedisError as exc:
            raise RegistryError(str(exc)) from exc

    async def owner(self, channel: str) -> str | None:
        try:
            value = await self._client.get(self._prefix + channel)
        except RedisError as exc:
            raise RegistryError(str(exc)) from exc
        return None if value is None else str(value)

    async def refresh(self, node_id: str, channels: Iterable[str]) -> list[str]:
        names = list(channels)
        if not names:
            return []
        try:
            lost = await self._refresh(keys=[self._prefix + c for c in names], args=[node_id, self._ttl_ms])
        except RedisError as exc:
            raise RegistryError(str(exc)) from exc
        return [names[int(i) - 1] for i in lost]

    async def release(self, channel: str, node_id: str) -> None:
        try:
            await self._release(keys=[self._prefix + channel], args=[node_id])
        except RedisError as exc:
            raise RegistryError(str(exc)) from exc

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except RedisError:
            pass
