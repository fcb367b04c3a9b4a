"""Streams whose node died: ended by the nodes that live on.

A node that dies with SIGKILL ends nothing; its streams would stay live in the directory for good.
Every node looks at the open streams now and then; one whose node has been missing from the registry
for GRACE seconds in a row (long enough that a Redis restart, after which every node announces again
within a second, is not taken for deaths) is ended as lost. A registry that cannot be read ends
nothing. Several nodes may reap at once: ending is idempotent.

It also takes offline a channel marked live with no open stream for ORPHAN_GRACE seconds in a row: a
stream that ended because another node claimed its channel leaves the channel live for the stream
that node is starting, and if that never comes (its negotiation failed), nothing else would.
"""

from __future__ import annotations

import asyncio
import logging

from cluster import NODE_TTL, NodeRegistry
from lifecycle.tasks import stop
from signaling.streams.service import StreamService

log = logging.getLogger(__name__)

INTERVAL = 2.0  # seconds between looks
GRACE = NODE_TTL + 3.0  # seconds a node must be missing before its streams are ended
ORPHAN_GRACE = 15.0  # seconds a live channel may have no open stream (a takeover negotiating) before it goes offline


class StreamReaper:
    def __init__(self, streams: StreamService, registry: NodeRegistry, node_id: str) -> None:
        self._streams = streams
        self._registry = registry
        self._node_id = node_id
        self._missing_since: dict[str, float] = {}
        self._orphan_since: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="stream-reaper")

    async def close(self) -> None:
        # Bounded, and the loop ends by itself once closed: a registry client that turns the
        # cancellation into an error of its own (caught below as "the registry is down") kept this
        # loop going, and a node's shutdown waited in this step until SIGKILL (CI run U).
        self._closed = True
        await stop([self._task], "the stream reaper", INTERVAL + 5)
        self._task = None

    async def _run(self) -> None:
        while not self._closed:
            await asyncio.sleep(INTERVAL)
            try:
                await self.reap()
            except Exception as exc:  # noqa: BLE001 - the database or registry is down: look again later
                log.warning("could not look for streams of lost nodes: %s", exc)

    async def reap(self) -> int:
        """End the open streams of nodes missing for GRACE seconds; how many were ended."""
        async with asyncio.timeout(5):
            live = {n.record.id for n in await self._registry.live()}
        open_streams = await self._streams.open_streams()
        now = asyncio.get_running_loop().time()
        missing = {node for _, _, node in open_streams if node not in live and node != self._node_id}
        self._missing_since = {node: self._missing_since.get(node, now) for node in missing}
        ended = 0
        for stream, channel, node in open_streams:
            if node in missing and now - self._missing_since[node] >= GRACE:
                if await self._streams.end_lost(stream, channel, f"node {node} lost"):
                    log.warning("stream %s of %s ended: its node %s is gone", stream[:8], channel, node)
                    ended += 1
        orphans = await self._streams.orphaned_channels()
        self._orphan_since = {channel: self._orphan_since.get(channel, now) for channel in orphans}
        for channel in orphans:
            if now - self._orphan_since[channel] >= ORPHAN_GRACE and await self._streams.end_orphan(
                    channel, "the node taking it over never went live"):
                log.warning("channel %s went offline: live with no stream for %g s", channel, ORPHAN_GRACE)
                ended += 1
        return ended
