"""Who is in a channel's chat: the signed-in users with a chat connection (a WebSocket on a front door
or a data channel on a node) to any process. Each hub says every REFRESH seconds whom it holds, and at
once when someone comes in; a name stays listed until TTL passes without a word (so a process that
dies takes its names with it within TTL). Anonymous readers are counted by the viewer count, not
listed. An expiring set per channel: in memory, or in Redis so every process lists the same people.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable

from signaling.expiring_sets import ExpiringSets, MemoryExpiringSets, open_expiring_sets

REFRESH = 10.0  # seconds between a hub's "still here"
TTL = 25.0  # seconds a name is listed after the last word about it
MAX_PER_CHANNEL = 20_000  # names kept per channel; beyond it the ones heard of longest ago go


class ChatPresence:
    """Members are "<hub>|<username>": a hub takes out only its own (a user may be in the chat through
    several processes at once); the list shows each username once."""

    def __init__(self, sets: ExpiringSets, hub: str | None = None) -> None:
        self._sets = sets
        self._hub = hub or secrets.token_hex(6)

    @classmethod
    def in_memory(cls, clock: Callable[[], float] = time.time, max_per_channel: int = MAX_PER_CHANNEL) -> ChatPresence:
        return cls(MemoryExpiringSets(TTL, max_per_channel, clock))

    async def here(self, channel: str, usernames: Iterable[str]) -> None:
        """These users are in the channel's chat (on this process) now."""
        await self._sets.touch(channel, (f"{self._hub}|{name}" for name in usernames))

    async def gone(self, channel: str, username: str) -> None:
        """The user's last connection on this process left (its connections elsewhere keep it listed)."""
        await self._sets.drop(channel, f"{self._hub}|{username}")

    async def listed(self, channel: str, limit: int) -> tuple[list[str], int]:
        """Up to `limit` usernames in the chat, sorted, and how many there are in all."""
        names = sorted({member.partition("|")[2] for member in await self._sets.members(channel)})
        return names[:limit], len(names)

    async def close(self) -> None:
        await self._sets.close()


def open_chat_presence(bus_url: str, clock: Callable[[], float] = time.time) -> ChatPresence:
    return ChatPresence(open_expiring_sets(bus_url, "tally:chatters:", TTL, MAX_PER_CHANNEL, clock))
