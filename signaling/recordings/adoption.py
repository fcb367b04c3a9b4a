"""Recordings whose node is gone for good, finished by a node that lives on.

A node that dies leaves its recordings unfinished: their spools are on its own disk, and it finalizes
them when it starts again (`RecordingService.recover`). A node that never comes back (its host is gone,
the cluster was scaled down) would leave them "recording" for good. Every media node of a cluster looks
now and then. A recording is taken by one of them (an atomic claim in the database) and finished from
the live copy the dead node had been sending to the storage when both hold:

- its node has been missing from the registry for RECORDING_ADOPT_AFTER seconds in a row (long enough
  for a restart to recover its own), and is still missing right before the claim;
- its live copy has not changed for as long, as this node has watched it (its own clock: the storage's
  may differ). A node cut off from Redis alone may still be writing; the cluster has ended its streams
  by then (signaling.streams.reaper), and this waits for its copy to stop growing as well.

A recording with no copy in the storage (one the nodes do not share, or a death before the first push)
waits for its node. A look that cannot read the registry adopts nothing and restarts the count: an
outage is no proof of death. One recording that cannot be adopted holds up no other.
"""

from __future__ import annotations

import asyncio
import logging

from cluster import NodeRegistry
from lifecycle.tasks import Periodic
from signaling.recordings.service import RecordingService

log = logging.getLogger(__name__)

EVERY = 10.0  # seconds between looks, at most
MAX_SAID = 10_000  # recordings without a copy, told once each


class RecordingAdopter:
    def __init__(self, recordings: RecordingService, registry: NodeRegistry, after: float) -> None:
        self._recordings = recordings
        self._registry = registry
        self._after = after
        self._missing_since: dict[str, float] = {}  # node -> when it was first seen missing (the loop's clock)
        self._copies: dict[int, tuple[float, float]] = {}  # row id -> (its copy's last write, seen unchanged since)
        self._no_copy: set[int] = set()
        self._failing = False
        # At least twice within `after`, so that a node is adopted from soon after that.
        self._periodic = Periodic("recording-adoption", min(EVERY, max(0.5, after / 2)), self.look)

    def start(self) -> None:
        self._periodic.start()

    async def close(self) -> None:
        await self._periodic.close()

    async def _live(self) -> set[str] | None:
        try:
            async with asyncio.timeout(5):
                live = {n.record.id for n in await self._registry.live()}
        except Exception as exc:  # noqa: BLE001 - the registry is down: no death is proven meanwhile
            self._missing_since.clear()
            self._copies.clear()
            if not self._failing:
                log.warning("could not look for recordings of lost nodes: %s", exc or type(exc).__name__)
            self._failing = True
            return None
        self._failing = False
        return live

    async def look(self) -> int:
        """Adopt what is due; how many recordings were taken here."""
        live = await self._live()
        if live is None:
            return 0
        try:
            rows = await self._recordings.unfinished_elsewhere()
        except Exception as exc:  # noqa: BLE001 - the database is down: the next look reads it again
            log.warning("could not read the recordings of other nodes: %s", exc)
            return 0
        now = asyncio.get_running_loop().time()
        missing = {node for _, _, node in rows if node not in live}
        self._missing_since = {node: self._missing_since.get(node, now) for node in missing}
        copies: dict[int, tuple[float, float]] = {}
        adopted = 0
        for row_id, room, node in rows:
            if node not in missing:
                continue
            try:
                adopted += await self._consider(row_id, room, node, now, copies)
            except Exception:  # one recording that fails holds up no other; it is looked at again
                log.exception("could not adopt recording %d of node %s", row_id, node)
        self._copies = copies
        return adopted

    async def _consider(self, row_id: int, room: str, node: str, now: float,
                        copies: dict[int, tuple[float, float]]) -> bool:
        written = await self._recordings.copy_written(row_id, room)
        if written is None:
            if row_id not in self._no_copy and len(self._no_copy) < MAX_SAID:
                self._no_copy.add(row_id)
                log.warning("recording %d of %s: its node %s is missing and the storage holds no copy of it; it "
                            "waits for that node", row_id, room, node)
            return False
        before = self._copies.get(row_id)
        since = before[1] if before is not None and before[0] == written else now
        copies[row_id] = (written, since)
        if now - self._missing_since[node] < self._after or now - since < self._after:
            return False
        live = await self._live()  # again right before: it may have come back meanwhile
        if live is None or node in live:
            return False
        return await self._recordings.adopt(row_id, room, node)
