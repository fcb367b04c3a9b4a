"""Who is in a channel's chat: the signed-in users with a chat connection (a WebSocket on a front door
or a data channel on a node) to any process. Each hub says every REFRESH seconds whom it holds, and at
once when someone comes in; a name stays listed until TTL passes without a word (so a process that
dies takes its names with it within TTL). Anonymous readers are counted by the viewer count, not
listed. In memory for one process; a Redis sorted set per channel (member: the username, score: when
it expires) when the bus is Redis, so every process lists the same people.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

from bus import is_shared

REFRESH = 10.0  # seconds between a hub's "still here"
TTL = 25.0  # seconds a name is listed after the last word about it
MAX_PER_CHANNEL = 20_000  # names kept per channel; beyond it the ones heard of longest ago go


class ChatPresence(ABC):
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock

    @abstractmethod
    async def here(self, channel: str, usernames: Iterable[str]) -> None:
        """These users are in the channel's chat (on this process) now."""

    @abstractmethod
    async def gone(self, channel: str, username: str) -> None:
        """The user's last connection on this process left (another process lists it again if it holds one)."""

    @abstractmethod
    async def listed(self, channel: str, limit: int) -> tuple[list[str], int]:
        """Up to `limit` usernames in the chat, sorted, and how many there are in all."""

    async def close(self) -> None:
        pass


class MemoryChatPresence(ChatPresence):
    def __init__(self, clock: Callable[[], float] = time.time, max_channels: int = 10_000) -> None:
        super().__init__(clock)
        self._seen: dict[str, dict[str, float]] = {}  # channel -> username -> expiry, oldest word first
        self._max_channels = max_channels

    def _prune(self, channel: str, now: float) -> dict[str, float]:
        names = self._seen.get(channel, {})
        while names:
            first = next(iter(names))
            if names[first] > now and len(names) <= MAX_PER_CHANNEL:
                break
            del names[first]
        if not names:
            self._seen.pop(channel, None)
        return names

    async def here(self, channel: str, usernames: Iterable[str]) -> None:
        now = self.clock()
        names = self._prune(channel, now)
        if channel not in self._seen:
            if len(self._seen) >= self._max_channels:
                for other in list(self._seen):
                    self._prune(other, now)
                if len(self._seen) >= self._max_channels:
                    return
            names = self._seen[channel] = {}
        for username in usernames:
            names.pop(username, None)
            names[username] = now + TTL
        self._prune(channel, now)

    async def gone(self, channel: str, username: str) -> None:
        names = self._seen.get(channel)
        if names is not None:
            names.pop(username, None)
            if not names:
                del self._seen[channel]

    async def listed(self, channel: str, limit: int) -> tuple[list[str], int]:
        names = self._prune(channel, self.clock())
        return sorted(names)[:limit], len(names)


class RedisChatPresence(ChatPresence):
    def __init__(self, url: str, clock: Callable[[], float] = time.time, prefix: str = "tally:chatters:") -> None:
        super().__init__(clock)
        import redis.asyncio as aioredis

        self._client: Any = aioredis.Redis.from_url(url)
        self._prefix = prefix

    async def here(self, channel: str, usernames: Iterable[str]) -> None:
        names = list(usernames)
        if not names:
            return
        key, now = self._prefix + channel, self.clock()
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {name: now + TTL for name in names})
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zremrangebyrank(key, 0, -MAX_PER_CHANNEL - 1)
            pipe.expire(key, int(TTL) + 5)
            await pipe.execute()

    async def gone(self, channel: str, username: str) -> None:
        await self._client.zrem(self._prefix + channel, username)

    async def listed(self, channel: str, limit: int) -> tuple[list[str], int]:
        key, now = self._prefix + channel, self.clock()
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(key, f"({now}", "+inf")
            answers = await pipe.execute()
        names = sorted(name.decode() if isinstance(name, bytes) else str(name) for name in answers[0])
        return names[:limit], len(names)

    async def close(self) -> None:
        await self._client.aclose()


def open_chat_presence(bus_url: str, clock: Callable[[], float] = time.time) -> ChatPresence:
    return RedisChatPresence(bus_url, clock) if is_shared(bus_url) else MemoryChatPresence(clock)
