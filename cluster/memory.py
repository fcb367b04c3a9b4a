"""The registry of one process: the embedded default, where the one node is the whole cluster."""

from __future__ import annotations

import time
from collections.abc import Callable

from cluster.registry import NODE_TTL, LiveNode, NodeRecord, NodeRegistry


class MemoryRegistry(NodeRegistry):
    def __init__(self, clock: Callable[[], float] = time.monotonic, ttl: float = NODE_TTL) -> None:
        self._clock = clock
        self._ttl = ttl
        self._records: dict[str, tuple[float, NodeRecord]] = {}

    async def announce(self, record: NodeRecord) -> None:
        self._records[record.id] = (self._clock() + self._ttl, record)

    async def withdraw(self, node_id: str) -> None:
        self._records.pop(node_id, None)

    async def live(self) -> list[LiveNode]:
        now = self._clock()
        for node_id in [i for i, (expires, _) in self._records.items() if expires <= now]:
            del self._records[node_id]
        return [LiveNode(record, self._ttl - (expires - now)) for _, (expires, record) in sorted(self._records.items())]
