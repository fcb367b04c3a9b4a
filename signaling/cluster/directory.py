"""The live nodes as a front door needs them: read from the registry at most every few hundred
milliseconds (a burst of offers or HLS requests reads it once), and looked up by channel."""

from __future__ import annotations

import asyncio
import logging
import time

from cluster import NODE_TTL, NodeRecord, NodeRegistry, RegistryError
from signaling.errors import Unavailable

log = logging.getLogger(__name__)

REGISTRY_TIMEOUT = 3.0  # seconds
FRESH = 0.25  # seconds one registry reading serves


class NodeDirectory:
    def __init__(self, registry: NodeRegistry) -> None:
        self._registry = registry
        self._reading: asyncio.Task[list[NodeRecord]] | None = None
        self._read_at = -FRESH
        self._gone: dict[str, float] = {}  # node id -> until when it is left out, though still listed
        self._heard_at: dict[str, float] = {}  # node id -> when (time.monotonic) its record was announced

    def gone(self, node_id: str) -> None:
        """Nobody serves `node_id` any more (it died): leave it out now, not when its record expires.
        Only a node the registry lists counts (an id from a forged session URL is nobody)."""
        reading = self._reading
        if reading is None or not reading.done() or reading.cancelled() or reading.exception() is not None:
            return
        if any(n.id == node_id and not n.draining for n in reading.result()):  # a draining one answers no door
            self._gone[node_id] = asyncio.get_running_loop().time() + NODE_TTL + 1.0

    async def nodes(self) -> list[NodeRecord]:
        """The live nodes; 503 when the registry cannot be read."""
        loop = asyncio.get_running_loop()
        if self._reading is None or (self._reading.done() and loop.time() - self._read_at > FRESH):
            self._read_at = loop.time()
            self._reading = asyncio.ensure_future(self._read())
        try:
            nodes = await asyncio.shield(self._reading)
        except (RegistryError, TimeoutError) as exc:  # the registry's store is down
            log.warning("could not read the node registry: %s", exc)
            raise Unavailable("no media node can be reached right now", retry_after=3) from None
        if self._gone:
            now = loop.time()
            for node_id in [i for i, until in self._gone.items() if until < now]:
                del self._gone[node_id]
            nodes = [n for n in nodes if n.id not in self._gone]
        return nodes

    async def _read(self) -> list[NodeRecord]:
        async with asyncio.timeout(REGISTRY_TIMEOUT):
            live = await self._registry.live()
        now = time.monotonic()
        self._heard_at = {n.record.id: now - n.age for n in live}  # replaced whole: bounded by the live nodes
        return [n.record for n in live]

    def heard_at(self, node_id: str) -> float:
        """When (time.monotonic) the node made the announcement last read: what it has done since, its
        record does not show yet."""
        return self._heard_at.get(node_id, float("-inf"))

    async def carrying(self, channel: str) -> NodeRecord | None:
        """The node where `channel` is published (its origin)."""
        return carrying(await self.nodes(), channel)

    async def serving_hls(self, channel: str) -> NodeRecord | None:
        """The node that serves `channel`'s HLS (live, or its ended stream's lingering playlists)."""
        nodes = await self.nodes()
        return carrying(nodes, channel) or next((n for n in nodes if channel in n.hls), None)


def carrying(nodes: list[NodeRecord], channel: str) -> NodeRecord | None:
    """The node where `channel` is published (its origin)."""
    for node in nodes:
        if any(stream.channel == channel and not stream.relay_from for stream in node.streams):
            return node
    return None


def relaying(nodes: list[NodeRecord], channel: str) -> list[NodeRecord]:
    """The nodes where `channel` is relayed from another node."""
    return [n for n in nodes if any(s.channel == channel and s.relay_from for s in n.streams)]
