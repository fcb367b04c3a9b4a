"""A node's heartbeat: its record into the registry every interval, withdrawn when it stops."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from cluster.registry import ANNOUNCE_INTERVAL, NodeRecord, NodeRegistry

log = logging.getLogger(__name__)


class Announcer:
    """Owns the task that announces `describe()` every `interval` seconds.

    A registry that cannot be reached is logged once per outage, and announcing goes on: the node is
    back in the cluster with the registry's first answer.
    """

    def __init__(self, registry: NodeRegistry, describe: Callable[[], NodeRecord],
                 interval: float = ANNOUNCE_INTERVAL) -> None:
        self._registry = registry
        self._describe = describe
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._draining = False
        self._failing = False
        self.node_id = ""

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="cluster-announce")

    async def drain(self) -> None:
        """Tell the cluster now that this node takes no new sessions."""
        self._draining = True
        await self._announce_once()

    async def close(self) -> None:
        """Stop announcing and take the node out of the registry."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.node_id:
            try:
                async with asyncio.timeout(self._interval):
                    await self._registry.withdraw(self.node_id)
            except Exception as exc:  # noqa: BLE001 - it expires by itself within NODE_TTL
                log.warning("could not withdraw node %s from the registry: %s", self.node_id, exc)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self._announce_once()
            next_at += self._interval
            now = loop.time()
            if next_at < now:  # a stalled loop: announce now, then keep the cadence from here
                next_at = now
            await asyncio.sleep(next_at - now)

    async def _announce_once(self) -> None:
        record = self._describe()
        if self._draining:
            record = dataclasses.replace(record, draining=True)
        self.node_id = record.id
        try:
            async with asyncio.timeout(self._interval):
                await self._registry.announce(record)
        except Exception as exc:  # noqa: BLE001 - any failure of the store; the next beat tries again
            if not self._failing:
                log.warning("could not announce node %s to the registry: %s", record.id, exc or type(exc).__name__)
            self._failing = True
        else:
            if self._failing:
                log.info("node %s is announced to the registry again", record.id)
            self._failing = False
