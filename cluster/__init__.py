"""Which Tallylight nodes are alive, where they are, and how loaded.

Every media node announces a `NodeRecord` every `ANNOUNCE_INTERVAL` seconds; a node silent for
`NODE_TTL` seconds is dead. `open_registry(url)` picks the store by the bus URL: in memory (one
process) or Redis (every process of a cluster). Placement reads `live()`.
"""

from cluster.announcer import Announcer
from cluster.factory import open_origin_locks, open_registry
from cluster.origins import ORIGIN_TTL, OriginLocks
from cluster.registry import (
    ANNOUNCE_INTERVAL,
    NODE_TTL,
    LiveNode,
    NodeIdTaken,
    NodeLoad,
    NodeRecord,
    NodeRegistry,
    RegistryError,
    StreamLoad,
)

__all__ = [
    "ANNOUNCE_INTERVAL", "NODE_TTL", "Announcer", "LiveNode", "NodeIdTaken", "NodeLoad", "NodeRecord", "NodeRegistry", "RegistryError", "StreamLoad",
    "ORIGIN_TTL", "OriginLocks", "open_origin_locks", "open_registry",
]
