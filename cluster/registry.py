"""The registry interface and what a node says about itself."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from typing import Any

ANNOUNCE_INTERVAL = 1.0  # seconds between a node's announcements
NODE_TTL = 3.0  # seconds of silence after which a node is dead


@dataclass(frozen=True, slots=True)
class StreamLoad:
    """A live stream a node carries."""

    channel: str
    stream: str
    viewers: int


@dataclass(frozen=True, slots=True)
class NodeLoad:
    """How busy a node was over its last announcement interval."""

    cpu: float = 0.0  # share of one core used by the node's process
    viewers: int = 0
    pending: int = 0  # sessions offered but not yet connected
    publishers: int = 0
    packets_out_per_s: float = 0.0
    relays: int = 0
    ladders: int = 0  # HLS ladders encoding


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One node's announcement: who it is, where to reach it, how loaded it is."""

    id: str
    http_url: str  # where other Tallylight processes reach its HTTP service
    media_addresses: tuple[str, ...] = ()  # the addresses its ICE candidates announce
    max_viewers: int = 0
    started_at: float = 0.0  # Unix time
    draining: bool = False  # takes no new sessions
    version: str = ""
    load: NodeLoad = field(default_factory=NodeLoad)
    streams: tuple[StreamLoad, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> NodeRecord:
        return cls(
            id=str(data["id"]),
            http_url=str(data["http_url"]),
            media_addresses=tuple(str(a) for a in data.get("media_addresses", ())),
            max_viewers=int(data.get("max_viewers", 0)),
            started_at=float(data.get("started_at", 0.0)),
            draining=bool(data.get("draining", False)),
            version=str(data.get("version", "")),
            load=_known(NodeLoad, data.get("load", {})),
            streams=tuple(_known(StreamLoad, s) for s in data.get("streams", ())),
        )


@dataclass(frozen=True, slots=True)
class LiveNode:
    """A node the registry heard from `age` seconds ago (less than NODE_TTL)."""

    record: NodeRecord
    age: float


def _known(cls: Any, data: dict[str, Any]) -> Any:
    """`cls` from the fields of `data` it knows: a node of a newer version still reads as a node."""
    return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


class NodeRegistry(ABC):
    """Where nodes announce themselves and where the live ones are listed."""

    @abstractmethod
    async def announce(self, record: NodeRecord) -> None:
        """Say `record`'s node is alive for the next NODE_TTL seconds."""

    @abstractmethod
    async def withdraw(self, node_id: str) -> None:
        """Say the node is gone, now rather than after NODE_TTL."""

    @abstractmethod
    async def live(self) -> list[LiveNode]:
        """The nodes that announced themselves within NODE_TTL, by id."""

    async def close(self) -> None:
        """Let go of connections."""
