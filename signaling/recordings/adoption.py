"""Recordings whose node is gone for good, finished by a node that lives on.

A node that dies leaves its recordings unfinished: their spools are on its own disk, and it finalizes
them when it starts again (`RecordingService.recover`). A node that never comes back (its host is gone,
the cluster was scaled down) would leave them "recording" for good. Every media node of a cluster looks
now and then; a recording whose node has been missing from the registry for RECORDING_ADOPT_AFTER
seconds in a row (long enough for a restart to recover its own) is taken by one of them (an atomic
claim in the database) and finished from the live copy the dead node had been sending to the storage.
A registry that cannot be read adopts nothing.
"""

from __future__ import annotations

import asyncio
import logging

from cluster import NodeRegistry
from lifecycle.tasks import Periodic
from signaling.recordings.service import RecordingService

log = logging.getLogger(__name__)

EVERY = 10.0  # seconds between looks


class RecordingAdopter:
    def __init__(self, recordings: RecordingService, registry: NodeRegistry, after: float) -> None:
        self._recordings = recordings
        self._registry = registry
        self._after = after
        self._missing_since: dict[str, float] = {}
        # At least twice within `after`, so that a node is adopted from soon after that.
        self._periodic = Periodic("recording-adoption", min(EVERY, max(0.5, after / 2)), self._turn)
        self._failing = False

    def start(self) -> None:
        self._periodic.start()

    async def close(self) -> None:
        await self._periodic.close()

    async def _turn(self) -> None:
        try:
            await self.look()
        except Exception as exc:  # noqa: BLE001 - the registry or the database is down: look again later
            self._missing_since.clear()  # an outage is no proof of death: the count starts again after it
            if not self._failing:
                log.warning("could not look for recordings of lost nodes: %s", exc or type(exc).__name__)
            self._failing = True
        else:
            self._failing = False

    async def look(self) -> int:
        """Adopt the recordings of nodes missing for `after` seconds; how many were taken here."""
        async with asyncio.timeout(5):
            live = {n.record.id for n in await self._registry.live()}
        rows = await self._recordings.unfinished_elsewhere()
        now = asyncio.get_running_loop().time()
        missing = {node for _, _, node in rows if node not in live}
        self._missing_since = {node: self._missing_since.get(node, now) for node in missing}
        adopted = 0
        for row_id, room, node in rows:
            if node in missing and now - self._missing_since[node] >= self._after:
                async with asyncio.timeout(5):  # again right before: it may have come back meanwhile
                    if any(n.record.id == node for n in await self._registry.live()):
                        continue
                adopted += await self._recordings.adopt(row_id, room, node, self._after)
        return adopted
