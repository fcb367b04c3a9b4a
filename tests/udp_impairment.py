"""A lossy link for tests: a UDP relay that drops, delays and reorders datagrams by a seeded generator.

There is no netem on these machines (TESTING.md), so the relay sits in the candidates: the peer's
offer names the relay's server-facing port as the peer's candidate, the answer names its
client-facing port as the server's, and the relay passes what it lets through between the two. Every
datagram between the peers (ICE checks, DTLS, media both ways) crosses it; each direction is impaired
independently.
"""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Impairment:
    loss: float = 0.02  # probability a datagram is dropped
    delay: tuple[float, float] = (0.005, 0.025)  # seconds, uniform
    reorder: float = 0.02  # probability a datagram is held back an extra 10-40 ms (arrives after later ones)
    counts: dict[str, int] = field(default_factory=lambda: {"passed": 0, "dropped": 0, "reordered": 0})


class _Side(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Any) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self._on_datagram = on_datagram

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._on_datagram(data, addr)


class LossyRelay:
    """Relays between one peer and the server, impaired: `offer` and `answer` put it in their way."""

    def __init__(self, impairment: Impairment, seed: int) -> None:
        self.impairment = impairment
        self._rng = random.Random(seed)
        self._client_side = _Side(self._from_client)
        self._server_side = _Side(self._from_server)
        self._client: tuple[str, int] | None = None
        self.target: tuple[str, int] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self._client_side, local_addr=("127.0.0.1", 0))
        await loop.create_datagram_endpoint(lambda: self._server_side, local_addr=("127.0.0.1", 0))

    @staticmethod
    def _port(side: _Side) -> int:
        assert side.transport is not None
        return int(side.transport.get_extra_info("sockname")[1])

    def offer(self, sdp: str) -> str:
        """The peer's offer with the relay's server-facing port as its one candidate."""
        self._client = ("127.0.0.1", _candidate_port(sdp))
        return _CANDIDATE.sub(rf"\1 {self._port(self._server_side)} \3", sdp)

    def answer(self, sdp: str) -> str:
        """The server's answer with the relay's client-facing port as its candidate."""
        self.target = ("127.0.0.1", _candidate_port(sdp))
        return _CANDIDATE.sub(rf"\1 {self._port(self._client_side)} \3", sdp)

    def close(self) -> None:
        for side in (self._client_side, self._server_side):
            if side.transport is not None:
                side.transport.close()

    def _from_client(self, data: bytes, addr: tuple[str, int]) -> None:
        self._client = addr
        if self.target is not None:
            self._pass(data, self._server_side, self.target)

    def _from_server(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._client is not None:
            self._pass(data, self._client_side, self._client)

    def _pass(self, data: bytes, side: _Side, to: tuple[str, int]) -> None:
        rng, imp = self._rng, self.impairment
        if rng.random() < imp.loss:
            imp.counts["dropped"] += 1
            return
        delay = rng.uniform(*imp.delay)
        if rng.random() < imp.reorder:
            delay += rng.uniform(0.01, 0.04)
            imp.counts["reordered"] += 1
        imp.counts["passed"] += 1
        asyncio.get_running_loop().call_later(delay, self._send, side, data, to)

    @staticmethod
    def _send(side: _Side, data: bytes, to: tuple[str, int]) -> None:
        if side.transport is not None and not side.transport.is_closing():
            side.transport.sendto(data, to)


_CANDIDATE = re.compile(r"(a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1) (\d+) (typ host)")


def _candidate_port(sdp: str) -> int:
    match = _CANDIDATE.search(sdp)
    assert match, sdp
    return int(match.group(2))
