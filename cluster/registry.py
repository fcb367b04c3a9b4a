"""The registry interface and what a node says about itself.

A record travels as JSON and is read strictly (types, ranges, finite numbers); fields this version
does not know are ignored, so a node of a newer version still reads as a node, and a record that cannot
be read is skipped without hiding the others.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ANNOUNCE_INTERVAL = 1.0  # seconds between a node's announcements
NODE_TTL = 3.0  # seconds of silence after which a node is dead

_WIRE = ConfigDict(frozen=True, extra="ignore", strict=True, allow_inf_nan=False)


def _count() -> Any:
    return Field(default=0, ge=0, le=10**9)


def _share() -> Any:
    return Field(default=0.0, ge=0.0, le=1024.0)


class StreamLoad(BaseModel):
    """A live stream a node carries: published there (its origin), or relayed there from another node."""

    model_config = _WIRE
    channel: str = Field(max_length=64)
    stream: str = Field(max_length=64)
    viewers: int = _count()
    relay_from: str = Field(default="", max_length=128)  # the node upstream of a relay; "" on the origin


class NodeLoad(BaseModel):
    """How busy a node was over its last announcement interval."""

    model_config = _WIRE
    cpu: float = _share()  # CPU seconds per second of the whole process (every thread): 1.0 is one core
    loop: float = _share()  # the same, of the event loop's thread alone: forwarding stalls as it nears 1.0
    cores: int = _count()  # cores the process may use
    viewers: int = _count()
    pending: int = _count()  # sessions offered but not yet connected
    pending_viewers: int = _count()  # ...of them viewers' (each holds a viewer place; a publisher's does not)
    publishers: int = _count()
    packets_out_per_s: float = Field(default=0.0, ge=0.0, le=1e9)
    relays: int = _count()  # streams relayed to this node from others
    ladders: int = _count()  # HLS ladders encoding


class NodeRecord(BaseModel):
    """One node's announcement: who it is, where to reach it, how loaded it is."""

    model_config = _WIRE
    id: str = Field(min_length=1, max_length=128)
    instance: str = Field(default="", max_length=64)  # random per process: two processes with one id are told apart
    http_url: str = Field(max_length=512)  # where other Tallylight processes reach its HTTP service
    media_addresses: tuple[str, ...] = Field(default=(), max_length=64)  # the addresses its ICE candidates announce
    max_viewers: int = _count()
    started_at: float = Field(default=0.0, ge=0.0, le=1e11)  # Unix time
    draining: bool = False  # takes no new sessions
    version: str = Field(default="", max_length=64)
    load: NodeLoad = NodeLoad()
    streams: tuple[StreamLoad, ...] = Field(default=(), max_length=100_000)
    hls: tuple[str, ...] = Field(default=(), max_length=100_000)  # channels whose HLS it serves (live or lingering)

    def to_wire(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_wire(cls, data: str | bytes) -> NodeRecord | None:
        """The record in `data`, or None when it is not one this version can read."""
        try:
            return cls.model_validate_json(data)
        except ValidationError:
            return None


@dataclass(frozen=True, slots=True)
class LiveNode:
    """A node the registry heard from `age` seconds ago (less than NODE_TTL)."""

    record: NodeRecord
    age: float


class RegistryError(Exception):
    """The registry's store cannot be reached."""


class NodeIdTaken(Exception):
    """Another live process announces itself with this node's id."""


class NodeRegistry(ABC):
    """Where nodes announce themselves and where the live ones are listed. Stores that cannot be reached
    raise RegistryError."""

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
