"""The interface between the WHIP/WHEP endpoints and wherever the media is."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from signaling.auth.roles import Principal

Kind = Literal["publish", "subscribe"]


@dataclass(frozen=True, slots=True)
class Ticket:
    """A session just negotiated: the id the client puts in its session URL, its ETag and the SDP answer."""

    session: str
    etag: str
    answer: str


@dataclass(frozen=True, slots=True)
class SessionState:
    kind: Kind
    etag: str


@dataclass(frozen=True, slots=True)
class Layers:
    """A viewer's video choices: "source" and the encoded layers (highest first), the one it is on, and
    whether the server picks (from the viewer's loss) or the viewer chose."""

    choices: tuple[str, ...]
    current: str
    auto: bool


class MediaPlane(ABC):
    """Sessions are named by the `session` of their `Ticket`; refusals are `sfu.errors.SfuError`s."""

    takeover_after: float  # seconds a publisher must be silent before another may take its channel

    @abstractmethod
    async def publish(self, channel: str, offer: str, owner: str, client: str) -> Ticket: ...

    @abstractmethod
    async def subscribe(self, channel: str, offer: str, viewer: Principal | None, client: str) -> Ticket: ...

    @abstractmethod
    async def state(self, channel: str, session: str) -> SessionState:
        """Raise UnknownSession unless `session` is live in `channel`."""

    @abstractmethod
    async def trickle(self, channel: str, session: str, fragment: str) -> None: ...

    @abstractmethod
    async def restart_ice(self, channel: str, session: str, fragment: str) -> tuple[str, str]:
        """An ICE restart: (the answer fragment, the session's new ETag)."""

    @abstractmethod
    async def end(self, channel: str, session: str) -> None: ...

    @abstractmethod
    async def layers(self, channel: str, session: str) -> Layers: ...

    @abstractmethod
    async def choose_layer(self, channel: str, session: str, layer: str) -> Layers:
        """`layer` from `layers().choices`, or "auto"; UnknownLayer when there is no such layer."""
