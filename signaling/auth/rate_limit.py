"""Rate limits by key (client address, account): GCRA, which allows `limit` events per `period` with bursts.

The time comes from an injected clock on both implementations (the Redis one passes it to its script),
so tests advance time instead of sleeping.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from bus import is_shared


class RateLimiter(ABC):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    async def hit(self, key: str, limit: int, period: float) -> int:
        """Count one event; answer 0 if it is allowed, else the whole seconds until it would be."""
        wait = await self._hit(key, period / limit, period, self.clock())
        return 0 if wait <= 0 else max(1, math.ceil(wait))

    @abstractmethod
    async def _hit(self, key: str, interval: float, period: float, now: float) -> float: ...

    async def close(self) -> None:
        pass


class MemoryRateLimiter(RateLimiter):
    def __init__(self, clock: Callable[[], float] = time.time, max_keys: int = 100_000) -> None:
        super().__init__(clock)
        self._tat: dict[str, float] = {}
        self._max_keys = max_keys

    async def _hit(self, key: str, interval: float, period: float, now: float) -> float:
        tat = max(self._tat.get(key, now), now) + interval
        if tat - now > period:
            return tat - now - period
        if len(self._tat) >= self._max_keys:
            self._forget_idle(now)
        self._tat[key] = tat
        return 0.0

    def _forget_idle(self, now: float) -> None:
        for key in [key for key, tat in self._tat.items() if tat <= now]:
            del self._tat[key]


_GCRA = """
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
local now, interval, period = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if tat < now then tat = now end
tat = tat + interval
if tat - now > period then return tostring(tat - now - period) end
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil((tat - now) * 1000) + 1)
return '0'
"""


class RedisRateLimiter(RateLimiter):
    """Shared by every process on one Redis."""

    def __init__(self, url: str, clock: Callable[[], float] = time.time, prefix: str = "tally:rl:") -> None:
        super().__init__(clock)
        import redis.asyncio as aioredis

        self._client: Any = aioredis.Redis.from_url(url)
        self._script = self._client.register_script(_GCRA)
        self._prefix = prefix

    async def _hit(self, key: str, interval: float, period: float, now: float) -> float:
        answer = await self._script(keys=[self._prefix + key], args=[repr(now), repr(interval), repr(period)])
        return float(answer)

    async def close(self) -> None:
        await self._client.aclose()


def open_rate_limiter(bus_url: str, clock: Callable[[], float] = time.time) -> RateLimiter:
    """Redis when the bus is Redis (limits hold across processes), else in memory."""
    if is_shared(bus_url):
        return RedisRateLimiter(bus_url, clock)
    return MemoryRateLimiter(clock)
