"""A node's hold on the channels it originates: refreshed every second while their streams live (or a
publisher is being taken), let go when a stream ends (see cluster.origins). A channel another node
holds now is lost here: `on_lost` ends its room, so a channel never has two origins for long."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from cluster import OriginLocks
from lifecycle.tasks import stop

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 1.0  # seconds


class OriginKeeper:
    def __init__(self, locks: OriginLocks, node_id: str, held_here: Callable[[], set[str]],
                 on_lost: Callable[[str], None]) -> None:
        self._locks = locks
        self._node_id = node_id
        self._held_here = held_here
        self._on_lost = on_lost
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._closed = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="origin-keeper")

    async def close(self) -> None:
        self._closed = True
        await stop([self._task], "the origin keeper", REFRESH_INTERVAL + 2)
        self._task = None

    async def _run(self) -> None:
        while not self._closed:
            await asyncio.sleep(REFRESH_INTERVAL)
            try:
                async with asyncio.timeout(REFRESH_INTERVAL):
                    lost = await self._locks.refresh(self._node_id, sorted(self._held_here()))
            except Exception as exc:  # noqa: BLE001 - the store is down: the next beat tries again
                if not self._failing:
                    log.warning("could not keep this node's origin claims: %s", exc)
                self._failing = True
                continue
            self._failing = False
            for channel in lost:
                log.warning("channel %s is live on another node now: its stream here ends", channel)
                self._on_lost(channel)

    # A stream watcher: the end of a stream lets its channel go.

    async def stream_started(self, room: str, stream: str) -> None:
        return None

    async def stream_ended(self, room: str, stream: str) -> None:
        if room in self._held_here():
            return  # the channel goes on here (a new stream, or a publisher being taken)
        try:
            async with asyncio.timeout(REFRESH_INTERVAL):
                await self._locks.release(room, self._node_id)
        except Exception as exc:  # noqa: BLE001 - it expires by itself after ORIGIN_TTL
            log.warning("could not let go of channel %s: %s", room, exc)
