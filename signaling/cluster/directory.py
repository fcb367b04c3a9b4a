"""The live nodes as a front door needs them: read from the registry at most every few hundred
milliseconds (a burst of offers or HLS requests reads it once), and looked up by channel."""

from __future__ import annotations

import asyncio
import logging

from cluster import NodeRecord, NodeRegistry, RegistryError
from signaling.errors import Unavailable

log = logging.getLogger(__name__)

REGISTRY_TIMEOUT = 3.0  # seconds
FRESH = 0.25  # seconds one registry reading serves


class NodeDirectory:
    def __init__(self, registry: NodeRegistry) -> None:
        self._registry = registry
        self._reading: asyncio.Task[list[NodeRecord]] | None = None
        self._read_at = -FRESH

    async def nodes(self) -> list[NodeRecord]:
        """The live nodes; 503 when the registry cannot be read."""
        loop = asyncio.get_running_loop()
        if self._reading is None or (self._reading.done() and loop.time() - self._read_at > FRESH):
            self._read_at = loop.time()
            self._reading = asyncio.ensure_future(self._read())
        try:
            return await asyncio.shield(self._reading)
        except (RegistryError, TimeoutError) as exc:  # the registry's store is down
            log.warning("could not read the node registry: %s", exc)
            raise Unavailable("no media node can be reached right now", retry_after=3) from None

    async def _read(self) -> list[NodeRecord]:
        async with asyncio.timeout(REGISTRY_TIMEOUT):
            return [n.record for n in await self._registry.live()]

    async def carrying(self, channel: str) -> NodeRecord | None:
        """The node where `channel` is live."""
        return carrying(await self.nodes(), channel)

    async def serving_hls(self, channel: str) -> NodeRecord | None:
        """The node that serves `channel`'s HLS (live, or its ended stream's lingering playlists)."""
        nodes = await self.nodes()
        return carrying(nodes, channel) or next((n for n in nodes if channel in n.hls), None)


def carrying(nodes: list[NodeRecord], channel: str) -> NodeRecord | None:
    for node in nodes:
        if any(stream.channel == channel for stream in node.streams):
            return node
    return None
