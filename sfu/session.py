"""What publishers and subscribers share: one RTCPeerConnection, its id and ETag, trickle and close."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable

from aiortc import RTCConfiguration, RTCIceCandidate, RTCPeerConnection
from aiortc.sdp import candidate_from_sdp

from lifecycle.tasks import stop
from sfu.errors import BadOffer
from sfu import aiortc_internals as internals
from sfu.sdp_fragment import SdpFragment, build_fragment

log = logging.getLogger(__name__)


def new_etag() -> str:
    return f'"{secrets.token_hex(8)}"'


class Session:
    kind = "session"

    def __init__(self, room: str, user: str | None, clock: Callable[[], float] = time.monotonic, client: str = "") -> None:
        self.id = secrets.token_urlsafe(24)
        self.etag = new_etag()
        self.room = room
        self.user = user
        self.client = client  # the address the offer came from (pending sessions are capped per address)
        self.candidates = 0  # remote candidates trickled in so far
        self.tag: object = None  # whatever the caller attaches (signaling: who is signed in on it)
        self._clock = clock
        self.created_at = clock()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # a server gathers host candidates only
        self.connected = False  # ICE and DTLS came up (once): a pending session until then
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: object) -> None:
        """Run a task owned by this session: cancelled when it closes."""
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def mids(self) -> list[str]:
        return [t.mid for t in self.pc.getTransceivers() if t.mid is not None]

    def checked_candidates(self, fragment: SdpFragment) -> list[RTCIceCandidate]:
        """The fragment's candidates as aiortc takes them (UDP only: aioice speaks ICE over UDP), or
        BadOffer naming the first malformed one."""
        mids = self.mids
        parsed = []
        for candidate in fragment.candidates:
            try:
                found = candidate_from_sdp(candidate.sdp)
            except Exception:
                raise BadOffer(f"malformed candidate: {candidate.sdp[:120]!r}") from None
            found.sdpMid = candidate.mid if candidate.mid in mids else (mids[0] if mids else None)
            if found.protocol.lower() == "udp":
                parsed.append(found)
        return parsed

    async def add_candidates(self, candidates: list[RTCIceCandidate]) -> None:
        for candidate in candidates:
            await self.pc.addIceCandidate(candidate)

    def restart_ice(self, fragment: SdpFragment) -> str:
        """Answer an ICE restart: the SDP fragment with our new credentials and candidates; new ETag."""
        assert fragment.ufrag is not None and fragment.pwd is not None
        if not (4 <= len(fragment.ufrag) <= 256 and 22 <= len(fragment.pwd) <= 256):
            raise BadOffer("ice-ufrag must be 4-256 and ice-pwd 22-256 characters (RFC 8839 5.4)")
        ufrag, pwd, candidates = internals.restart_ice(self.pc, fragment.ufrag, fragment.pwd)
        self.etag = new_etag()
        return build_fragment(ufrag, pwd, self.mids[:1], candidates)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await stop(list(self._tasks), f"session {self.id}")
        try:
            await internals.close_peer(self.pc)
        except Exception:  # closing must finish whatever state aiortc is in
            log.exception("closing session %s", self.id)
