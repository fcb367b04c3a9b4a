"""The receiving end of a relay: a stream carried from another node into a room of this one.

A relay is a WebRTC peer between two nodes. This side offers, asking for the stream as a player
would (receive-only audio and video); the upstream node (the origin, or a relay nearer to it) answers
it as it answers any viewer, from the same feeds, with the same NACK, keyframe and sender-report
handling. From then on the relay feeds this node's room exactly as a publisher does: its viewers'
keyframe requests and the losses it sees go upstream as PLI and NACK, and the upstream sender reports
map its RTP clocks, so lip sync holds across any number of hops.

Why a WebRTC peer and not bare RTP over UDP: every piece of it already exists and is tested on both
ends (retransmission, keyframes, reports, the datagram guard), it is encrypted and authenticated
between hosts that may be in different networks, and it passes NATs and firewalls like any session.
It costs one SRTP encryption and one decryption per packet per relay, which is small beside the
fan-out it saves (BENCHMARKS.md, "Relays").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiortc import RTCSessionDescription
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError

from sfu import aiortc_internals as internals
from sfu.errors import BadOffer, UnsupportedMedia
from sfu.frame_sink import FrameSinks
from sfu.publisher import Publisher

_AIORTC_ERRORS = (ValueError, InternalError, InvalidAccessError, InvalidStateError)

MAX_HOPS = 8  # relays in a row from a stream's origin at most (node-to-node hops)


def relay_path(upstream: str, beyond: Sequence[object]) -> tuple[str, ...]:
    """The nodes a relay from `upstream` receives through, nearest first: `upstream` and the path it
    named for itself (`beyond`; what cannot be read of it is dropped, and it is cut at MAX_HOPS).

    A node feeds no relay to a node on its own path: a chain that loops back (B fed by D, fed by C, fed
    by B) would carry a stream with no source for as long as the loop holds, each node's viewers
    waiting on pictures that never come. Relays to the previous node alone were refused before; this
    refuses a loop of any length."""
    names = [n for n in beyond if isinstance(n, str) and 0 < len(n) <= 140]
    return (upstream, *names)[:MAX_HOPS]


class Relay(Publisher):
    kind = "relay"

    def __init__(self, room: str, upstream: str, clock: Callable[[], float], sinks: FrameSinks) -> None:
        super().__init__(room, None, clock, sinks, client=f"relay:{upstream}")
        self.upstream = upstream  # the node it receives from
        self.upstream_session = ""  # its session there, once answered

    async def offer(self, gathering: internals.HostGathering) -> str:
        """The offer to send upstream: receive audio and video, candidates gathered (no trickle)."""
        pc = self.pc
        for kind in ("video", "audio"):
            pc.addTransceiver(kind, direction="recvonly")
        gathering.apply(pc)
        self._guard = gathering.guard
        internals.guard_transports(pc, gathering.guard, self._on_rtp)  # packets go nowhere until `bind`
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        """The upstream node's answer: what it will send, numbered as it will send it (sections it will
        not send on, such as the audio of a stream without any, are left out)."""
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        except OperationError as exc:
            raise UnsupportedMedia(f"the upstream node sends nothing this node can forward: {exc}") from None
        except _AIORTC_ERRORS as exc:
            raise BadOffer(f"the upstream node's answer cannot be used: {exc}") from None
        self._take_formats(answer, sending_only=True)
