"""Pick the registry by the bus URL: where the bus is Redis, the nodes meet there too."""

from __future__ import annotations

from bus import is_shared
from cluster.memory import MemoryRegistry
from cluster.origins import MemoryOriginLocks, OriginLocks, RedisOriginLocks
from cluster.redis import RedisRegistry
from cluster.registry import NodeRegistry


def open_registry(bus_url: str, prefix: str = "tally:") -> NodeRegistry:
    if is_shared(bus_url):
        return RedisRegistry(bus_url, prefix)
    return MemoryRegistry()


def open_origin_locks(bus_url: str, prefix: str = "tally:") -> OriginLocks:
    if is_shared(bus_url):
        return RedisOriginLocks(bus_url, prefix)
    return MemoryOriginLocks()
