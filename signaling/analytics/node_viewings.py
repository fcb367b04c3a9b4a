"""The WebRTC viewing sessions of this process's node, told to the viewing book: a look at the node's
rooms every `every` seconds (never a hook in the packet path). A session is written when it is first
seen connected, again every `refresh` seconds while it lasts, and once more when it is gone; its start
is the node's own, its end known to within `every`. Relays are not viewers (their viewers are counted
where they watch)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sfu.node import SfuNode
from lifecycle.tasks import Periodic
from signaling.analytics.viewing import ViewingBook


@dataclass(slots=True)
class _Seen:
    channel_id: int
    stream: str
    viewer: str | None
    started: float
    written: float


class NodeViewings:
    def __init__(self, node: SfuNode, book: ViewingBook, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, every: float = 5.0, refresh: float = 30.0) -> None:
        self._node = node
        self._book = book
        self._clock = clock
        self._monotonic = monotonic  # the node's clock (its sessions' created_at)
        self._refresh = refresh
        self._seen: dict[str, _Seen] = {}
        self._periodic = Periodic("node-viewings", every, self.scan)

    async def scan(self) -> None:
        now, mono = self._clock(), self._monotonic()
        here: set[str] = set()
        for room in list(self._node.rooms.values()):
            for sub in list(room.subscribers.values()):
                if sub.relay or not sub.connected or sub.closed:
                    continue
                here.add(sub.id)
                seen = self._seen.get(sub.id)
                if seen is None:
                    found = await self._book.stream_of(room.name)  # (its channel id, kept a few seconds)
                    if found is None:
                        continue
                    seen = self._seen[sub.id] = _Seen(found[0], room.stream, f"u:{sub.user}" if sub.user else None,
                                                      now - max(0.0, mono - sub.created_at), now)
                elif now - seen.written < self._refresh:
                    continue
                seen.written = now
                self._book.node_session(sub.id, seen.channel_id, seen.stream, seen.viewer, seen.started, now, ended=False)
        for gone in [key for key in self._seen if key not in here]:
            seen = self._seen.pop(gone)
            self._book.node_session(gone, seen.channel_id, seen.stream, seen.viewer, seen.started, now, ended=True)

    def start(self) -> None:
        self._periodic.start()

    async def close(self) -> None:
        """Stop looking; the sessions still open end now (the node is closing with them)."""
        await self._periodic.close()
        now = self._clock()
        for key, seen in self._seen.items():
            self._book.node_session(key, seen.channel_id, seen.stream, seen.viewer, seen.started, now, ended=True)
        self._seen.clear()
