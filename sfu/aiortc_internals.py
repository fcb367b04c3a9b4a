"""Every use of aiortc's and aioice's private internals, in one place.

aiortc is built to decode what it receives and encode what it sends; an SFU must do neither. These are
the seams used instead (found in `shared/spikes/aiortc-forwarding/`), valid for the exact versions
below, which `pyproject.toml` pins:

- incoming RTP is taken on the DTLS transport right after SRTP decryption (`_handle_rtp_data`), then
  handed on to aiortc unchanged so its receiver still sends receiver reports and REMB;
- the receiver's jitter buffer is replaced by one that never completes a frame (the SFU re-assembles
  frames for its sinks itself, `sfu.frame_assembler`), so nothing is ever decoded and aiortc's
  decoder thread stays idle; its own NACK generator is switched off: `sfu.loss_tracker` owns
  upstream NACKs;
- a subscriber's sender keeps a never-yielding track (so it never encodes) and its RTCP feedback is
  intercepted: NACKs are answered from the SFU's packet cache, PLI/FIR go upstream coalesced;
- forwarded packets are SRTP-protected with the subscriber's session and written straight to the
  socket of its nominated ICE pair, synchronously, with no per-packet await;
- the sender's report fields are set from the publisher's clock mapping so players can lip-sync;
- host candidates are gathered on configured addresses and ports and announced as configured.

`check()` verifies all of it and raises `InternalsChanged`, naming what moved, before anything runs;
`tests/test_aiortc_internals.py` runs it and a real forwarding pair, so an upgrade fails loudly.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import logging
import socket
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import aioice
import aioice.ice
import aioice.stun
from aioice.utils import random_string
import aiortc
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc import rtcrtpreceiver, rtcrtpsender
from aiortc.codecs.base import Decoder
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcdatachannel import RTCDataChannel
from aiortc.rtcsctptransport import WEBRTC_BINARY, WEBRTC_STRING, RTCSctpTransport
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
)
from aiortc.codecs.h264 import H264Encoder
import pylibsrtp
from pylibsrtp._binding import ffi as srtp_ffi, lib as srtp_lib

from sfu.output import NOT_CONNECTED, SOCKET_REFUSED, SRTP_FAILED, TOO_LARGE, TRANSPORT_CLOSED

log = logging.getLogger(__name__)

AIORTC_VERSION = "1.16.0"
AIOICE_VERSION = "0.13.0"
PYLIBSRTP_VERSION = "1.0.0"
# A forwarded packet is what a publisher fitted in one full 1,500-byte datagram, with this
# subscriber's header extensions in place of the publisher's (they may be longer) and, for a
# retransmission, the RTX header; libsrtp then appends at most SRTP_TRAILER_BYTES.
MAX_RTP_BYTES = 1500 + 256
SRTP_TRAILER_BYTES = 16 + 128  # libsrtp's SRTP_MAX_TRAILER_LEN: the authentication tag and MKI, at most
SRTP_BUFFER_BYTES = MAX_RTP_BYTES + SRTP_TRAILER_BYTES
srtp_protect: Any = getattr(srtp_lib, "srtp_protect", None)  # `check()` refuses to run without it
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024



class InternalsChanged(RuntimeError):
    """aiortc or aioice no longer has what the SFU relies on: do not run, fix `sfu/aiortc_internals.py`."""


_CLASS_ATTRIBUTES: list[tuple[Any, str]] = [
    (RTCDtlsTransport, "_handle_rtp_data"),
    (RTCDtlsTransport, "_send_rtp"),
    (RTCDtlsTransport, "_handle_rtcp_data"),
    (RTCRtpReceiver, "_handle_rtcp_packet"),
    (RTCRtpReceiver, "_send_rtcp_pli"),
    (RTCRtpReceiver, "_send_rtcp_nack"),
    (RTCRtpSender, "_handle_rtcp_packet"),
    (RTCRtpSender, "_run_rtcp"),
    (aioice.ice.Connection, "get_component_candidates"),
    (aioice.ice, "StunProtocol"),
    (aioice.ice, "candidate_foundation"),
    (aioice.ice, "candidate_priority"),
    (aioice.ice, "get_host_addresses"),
    (aioice.stun, "parse_message"),
    (aioice.ice.Connection, "data_received"),
    (rtcrtpreceiver, "get_decoder"),
    (rtcrtpsender, "get_encoder"),
    (RTCSctpTransport, "_data_channel_receive"),
    (RTCSctpTransport, "_data_channel_flush"),
    (RTCDataChannel, "_addBufferedAmount"),
    (srtp_lib, "srtp_protect"),
]

# Instance attributes set in constructors; checked on the objects themselves when first used.
_RECEIVER_FIELDS = (
    "_RTCRtpReceiver__nack_generator",
    "_RTCRtpReceiver__jitter_buffer",
    "_RTCRtpReceiver__remote_streams",
    "_RTCRtpReceiver__rtcp_exited",
    "_run_rtcp",
)
_SENDER_FIELDS = (
    "_ssrc",
    "_RTCRtpSender__rtt",
    "_rtx_ssrc",
    "_RTCRtpSender__ntp_timestamp",
    "_RTCRtpSender__rtp_timestamp",
    "_RTCRtpSender__packet_count",
    "_RTCRtpSender__octet_count",
)


def check() -> None:
    """Raise `InternalsChanged` unless the pinned versions and every private name used are present."""
    problems = []
    if aiortc.__version__ != AIORTC_VERSION:
        problems.append(f"aiortc is {aiortc.__version__}, the SFU is verified against {AIORTC_VERSION}")
    if aioice.__version__ != AIOICE_VERSION:
        problems.append(f"aioice is {aioice.__version__}, the SFU is verified against {AIOICE_VERSION}")
    if pylibsrtp.__version__ != PYLIBSRTP_VERSION:
        problems.append(f"pylibsrtp is {pylibsrtp.__version__}, the SFU is verified against {PYLIBSRTP_VERSION}")
    for owner, name in _CLASS_ATTRIBUTES:
        if not hasattr(owner, name):
            problems.append(f"{getattr(owner, '__name__', owner)}.{name} is gone")
    if problems:
        raise InternalsChanged("; ".join(problems))


def _require(obj: object, names: tuple[str, ...]) -> None:
    missing = [name for name in names if not hasattr(obj, name)]
    if missing:
        raise InternalsChanged(f"{type(obj).__name__} lacks {', '.join(missing)}")


# --- codec factories: count them (forwarding creates none) ----------------------------------------


@dataclass
class CodecGuard:
    """Wraps aiortc's decoder and encoder factories for the whole process (they are module globals)."""

    stock_decoders: int = 0
    stock_encoders: int = 0
    _installed: bool = field(default=False, repr=False)

    def install(self) -> None:
        if self._installed:
            return
        original_decoder = getattr(rtcrtpreceiver, "get_decoder")
        original_encoder = getattr(rtcrtpsender, "get_encoder")

        def get_decoder(codec: Any) -> Decoder:
            self.stock_decoders += 1
            decoder: Decoder = original_decoder(codec)
            return decoder

        def get_encoder(codec: Any) -> Any:
            self.stock_encoders += 1
            return original_encoder(codec)

        setattr(rtcrtpreceiver, "get_decoder", get_decoder)
        setattr(rtcrtpsender, "get_encoder", get_encoder)
        self._installed = True


CODEC_GUARD = CodecGuard()  # one per process, like the factories it wraps


# --- the publisher side ---------------------------------------------------------------------------


def guard_transports(pc: RTCPeerConnection, guard: DatagramGuard, on_rtp: Callable[[bytes], bool] | None = None) -> None:
    """Keep every DTLS transport of `pc` alive whatever its peer sends, and tap its RTP.

    aiortc catches only `ValueError` from its RTP and RTCP parsers, and some malformed packets raise
    `struct.error` (an extension of the wrong length, say); any exception ends the transport's
    receive loop, and with it the session. So each packet's handling is guarded here: what fails is
    counted (and logged a few times). `on_rtp` gets every decrypted RTP packet before aiortc routes
    it (a publisher's forwarding), on every transport (an offer without BUNDLE has one per track),
    and says whether aiortc should see it too: its receiver keeps statistics per SSRC in dicts that
    never shrink, so a peer inventing SSRCs must not reach it.
    """
    seen: set[int] = set()
    for transceiver in pc.getTransceivers():
        transport = transceiver.receiver.transport
        if transport is not None and id(transport) not in seen:
            seen.add(id(transport))
            _guard_transport(transport, guard, on_rtp)


def _guard_transport(transport: RTCDtlsTransport, guard: DatagramGuard, on_rtp: Callable[[bytes], bool] | None) -> None:
    handle_rtp, handle_rtcp = transport._handle_rtp_data, transport._handle_rtcp_data

    async def guarded_rtp(data: bytes, arrival_time_ms: int) -> None:
        if on_rtp is not None:
            try:
                if not on_rtp(data):
                    return
            except Exception as exc:
                guard.refuse("forwarding_errors", "forwarding a packet failed", exc)
                return
        try:
            await handle_rtp(data, arrival_time_ms=arrival_time_ms)
        except Exception as exc:
            guard.refuse("malformed_rtp", "an RTP packet could not be handled", exc)

    async def guarded_rtcp(data: bytes) -> None:
        try:
            await handle_rtcp(data)
        except Exception as exc:
            guard.refuse("malformed_rtcp", "an RTCP packet could not be handled", exc)

    transport._handle_rtp_data = guarded_rtp  # type: ignore[method-assign]
    transport._handle_rtcp_data = guarded_rtcp  # type: ignore[method-assign]


def prepare_receiver(transceiver: RTCRtpTransceiver, on_sender_report: Callable[[int, int, int], None],
                     guard: DatagramGuard) -> None:
    """Make a publisher's receiver forward-only: no frames re-assembled, no stock NACKs, reports seen.

    The SFU re-assembles frames for its sinks itself (`sfu.frame_assembler`, which never hands on a
    frame with a packet missing); aiortc's jitter buffer would do the same work again for nobody, and
    sends its own keyframe requests around the SFU's coalescing. The receiver still keeps its
    statistics, receiver reports and REMB. `on_sender_report(ssrc, ntp_timestamp, rtp_timestamp)`
    gets the publisher's RTCP sender reports.

    Its receiver reports are built from statistics of what the publisher sent; numbers it made up
    (sequence numbers jumping about) overflow their fields, the report task dies with `struct.error`,
    and closing the receiver then waits for ever for that task to say it ended. So the task is kept
    running: on such an error the statistics start afresh.
    """
    receiver = transceiver.receiver
    _require(receiver, _RECEIVER_FIELDS)
    report = receiver._run_rtcp

    async def report_forever() -> None:
        try:
            while True:
                try:
                    await report()
                    return  # cancelled inside: it ended the way aiortc ends it
                except Exception as exc:
                    guard.refuse("malformed_rtp", "the publisher's statistics broke its receiver reports", exc)
                    receiver._RTCRtpReceiver__remote_streams.clear()  # type: ignore[attr-defined]
                    await asyncio.sleep(1)
        except asyncio.CancelledError:  # cancelled between two runs: say it ended, as aiortc's own would
            receiver._RTCRtpReceiver__rtcp_exited.set()  # type: ignore[attr-defined]
            raise

    receiver._run_rtcp = report_forever  # type: ignore[method-assign]
    receiver._RTCRtpReceiver__nack_generator = None  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__jitter_buffer = _NoFrames()  # type: ignore[attr-defined]
    original = receiver._handle_rtcp_packet

    async def handle(packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            on_sender_report(packet.ssrc, info.ntp_timestamp, info.rtp_timestamp)
        await original(packet)

    receiver._handle_rtcp_packet = handle  # type: ignore[method-assign]


class _NoFrames:
    """Stands in for a receiver's jitter buffer: takes every packet, never completes a frame, never
    asks for a keyframe (so aiortc's decoder thread waits idle until the receiver stops)."""

    @staticmethod
    def add(packet: Any) -> tuple[bool, None]:
        return False, None


async def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    await receiver._send_rtcp_pli(media_ssrc)


async def send_nack(receiver: RTCRtpReceiver, media_ssrc: int, lost: list[int]) -> None:
    await receiver._send_rtcp_nack(media_ssrc, lost)


# --- the subscriber side --------------------------------------------------------------------------


def sender_ssrcs(sender: RTCRtpSender) -> tuple[int, int]:
    """(media SSRC, RTX SSRC) the sender announced in SDP."""
    _require(sender, _SENDER_FIELDS)
    return sender._ssrc, sender._rtx_ssrc


_NOT_YET = object()
SelectorDatagramTransport: Any = getattr(asyncio.selector_events, "_SelectorDatagramTransport", ())  # () matches nothing


class RtpOutput:
    """Writes RTP to one subscriber: SRTP protect, then a synchronous datagram on the nominated pair.

    This is the packet path's inner loop (once per packet per subscriber), so it skips what the general
    APIs redo on every call: libsrtp is called on a buffer this output owns (pylibsrtp allocates a
    length cell, copies the packet to bytes first and re-checks it), and the datagram goes straight to
    the pair's socket while asyncio's transport has nothing queued (its `sendto` re-checks its arguments
    first). The pair, its address and its socket are looked up again only when ICE nominates another.
    """

    __slots__ = ("_dtls", "_connection", "_pair", "_transport", "_sock", "_addr", "_session", "_context",
                 "_cdata", "_buffer", "_length", "_failed")

    def __init__(self, sender: RTCRtpSender) -> None:
        self._dtls = sender.transport
        self._connection: aioice.ice.Connection = self._dtls.transport._connection
        self._pair: Any = _NOT_YET  # never a pair, nor None: the first call always looks
        self._transport: Any = None
        self._sock: Any = None  # None: send through the transport (not asyncio's own, or closing)
        self._addr: Any = None
        self._session: Any = _NOT_YET
        self._context: Any = None
        self._cdata = srtp_ffi.new("char[]", SRTP_BUFFER_BYTES)
        self._buffer = srtp_ffi.buffer(self._cdata)
        self._length = srtp_ffi.new("int *")
        self._failed = False

    def send(self, packet: bytes | bytearray) -> int:
        """Send; the socket's pending write bytes afterwards, or a negative `sfu.output` code (nothing sent)."""
        pair = self._connection._nominated.get(1)
        if pair is not self._pair and not self._retarget(pair):
            return NOT_CONNECTED
        session = self._dtls._tx_srtp
        if session is not self._session:
            if session is None:
                return NOT_CONNECTED
            _require(session, ("_srtp",))
            self._session, self._context = session, session._srtp[0]
        size = len(packet)
        if size > MAX_RTP_BYTES:
            return TOO_LARGE
        transport = self._transport
        if transport.is_closing():
            return TRANSPORT_CLOSED
        self._buffer[0:size] = packet
        self._length[0] = size
        status = srtp_protect(self._context, self._cdata, self._length)
        if status:
            if not self._failed:  # counted by the caller; said once per subscriber
                self._failed = True
                log.warning("SRTP protect failed with libsrtp status %d; such packets are dropped", status)
            return SRTP_FAILED
        data = self._buffer[0 : self._length[0]]
        sock = self._sock
        if sock is not None and not transport._buffer:  # nothing queued to keep the order behind
            try:
                sock.sendto(data, self._addr)
                return 0
            except (BlockingIOError, InterruptedError):
                pass  # full: the transport queues it and sends when writable
            except OSError:
                return SOCKET_REFUSED  # as asyncio's own transport: a datagram the network refused is lost
        transport.sendto(data, self._addr)
        return int(transport.get_write_buffer_size())

    def _retarget(self, pair: Any) -> bool:
        transport = pair.protocol.transport if pair is not None else None
        if transport is None:
            return False
        self._pair, self._transport, self._addr = pair, transport, pair.remote_addr
        # Only asyncio's selector transport keeps its queue in `_buffer` until the datagram is sent.
        direct = isinstance(transport, SelectorDatagramTransport) and not transport.get_extra_info("peername")
        self._sock = transport._sock if direct else None
        return True


def intercept_feedback(
    sender: RTCRtpSender,
    on_nack: Callable[[list[int]], None],
    on_keyframe_request: Callable[[], None],
    on_report: Callable[[float | None], None],
    on_loss: Callable[[float], None] | None = None,
) -> None:
    """Route a subscriber's RTCP for this sender to the SFU instead of aiortc's encoder logic.

    Receiver reports still reach aiortc (its stats and round-trip time); NACKs and PLI/FIR do not (it
    would answer from its own empty history and ask an encoder that does not exist). `on_report` gets
    the round-trip time aiortc measured from the report (None until there is one); `on_loss` the
    fraction lost of each report block about this sender's own stream (a report may describe others).
    """
    original = sender._handle_rtcp_packet
    ssrc = sender._ssrc

    async def handle(packet: Any) -> None:
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            on_nack(list(packet.lost))
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            on_keyframe_request()
        else:
            if not (isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP):
                await original(packet)
            on_report(getattr(sender, "_RTCRtpSender__rtt", None))
            if on_loss is not None and isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
                for block in packet.reports:
                    if block.ssrc == ssrc:
                        on_loss(block.fraction_lost / 256)

    sender._handle_rtcp_packet = handle  # type: ignore[method-assign]


def h264_payloads(annex_b: bytes) -> list[bytes]:
    """RTP payloads (single NAL, STAP-A, FU-A; packetization-mode 1) of one H.264 access unit, as
    aiortc's own sender would cut it (the server-side simulcast layers are sent this way)."""
    return H264Encoder._packetize(H264Encoder._split_bitstream(annex_b))


def h264_units(annex_b: bytes) -> list[bytes]:
    """The NAL units of an Annex B access unit, without their start codes."""
    return list(H264Encoder._split_bitstream(annex_b))


def h264_unit_payloads(units: list[bytes]) -> list[bytes]:
    """The same, from an access unit's NAL units (no start codes): an RTMP frame comes as those."""
    return H264Encoder._packetize(units)


def set_sender_report(sender: RTCRtpSender, ntp_timestamp: int, rtp_timestamp: int, packets: int, octets: int) -> None:
    """What the sender's next RTCP sender report says (aiortc sends it on its own timer)."""
    sender._RTCRtpSender__ntp_timestamp = ntp_timestamp  # type: ignore[attr-defined]
    sender._RTCRtpSender__rtp_timestamp = rtp_timestamp  # type: ignore[attr-defined]
    sender._RTCRtpSender__packet_count = packets  # type: ignore[attr-defined]
    sender._RTCRtpSender__octet_count = octets  # type: ignore[attr-defined]


# --- ICE: where to listen and what to announce ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class IcePlan:
    """Host candidates: bind on `bind_addresses` (aioice's detection when empty), announce each as the
    matching entry of `announced_addresses` (1:1 NAT) or as itself, on a port in `ports` (any if None)."""

    bind_addresses: tuple[str, ...] = ()
    announced_addresses: tuple[str, ...] = ()
    ports: tuple[int, int] | None = None

    def pairs(self) -> Iterator[tuple[str, str]]:
        binds = self.bind_addresses or tuple(aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False))
        for i, address in enumerate(binds):
            announced = self.announced_addresses[i] if i < len(self.announced_addresses) else address
            yield address, announced


class PortPool:
    """Hands out UDP ports from a range, round robin, skipping ports in use."""

    def __init__(self, low: int, high: int) -> None:
        self._low, self._high = low, high
        self._next = low

    def candidates(self) -> Iterator[int]:
        span = self._high - self._low + 1
        for _ in range(span):
            port = self._next
            self._next = self._low if port >= self._high else port + 1
            yield port


class DatagramGuard:
    """Counts what a node refused of what its peers and strangers sent; logs each kind a few times.

    Every datagram that reaches an ICE socket is checked before aioice sees it (RFC 7983 tells them
    apart by the first byte): STUN must parse (aioice's parser raises `struct.error` on some junk,
    which asyncio would log as a traceback per datagram), and anything else (DTLS, RTP, RTCP) must
    come from the peer of the session's nominated pair. Junk from anywhere else would otherwise sit in
    the connection's unbounded data queue until DTLS starts, or be handed to it afterwards. Packets
    inside a session that aiortc cannot handle are counted too (`guard_transports`).
    """

    KINDS = ("malformed_stun", "foreign_datagrams", "malformed_rtp", "malformed_rtcp", "forwarding_errors")
    LOGGED = 3

    def __init__(self) -> None:
        self.counts = dict.fromkeys(self.KINDS, 0)
        self._logged = dict.fromkeys(self.KINDS, 0)

    def refuse(self, kind: str, what: str, exc: Exception | None = None) -> None:
        self.counts[kind] += 1
        if exc is not None and self._logged[kind] < self.LOGGED:
            self._logged[kind] += 1
            log.warning("%s (%s: %s); counted on /metrics as %s, logged %d times at most", what, type(exc).__name__,
                        exc, kind, self.LOGGED, exc_info=kind == "forwarding_errors")


class _GuardedStunProtocol(aioice.ice.StunProtocol):
    def __init__(self, connection: aioice.ice.Connection, guard: DatagramGuard) -> None:
        super().__init__(connection)
        self._guard = guard

    def datagram_received(self, data: bytes | str, addr: tuple[Any, ...]) -> None:
        if not data or not isinstance(data, bytes):
            return
        if data[0] > 3:  # not STUN: DTLS, RTP or RTCP, only ever from the peer
            component = self.local_candidate.component
            pair = self.receiver._nominated.get(component)
            if (pair is None or pair.protocol is not self or pair.remote_addr != addr) and not self._pairs_with(addr):
                self._guard.refuse("foreign_datagrams", "")
                return
            self.receiver.data_received(data, component)
            return
        try:
            aioice.stun.parse_message(data)
            super().datagram_received(data, addr)
        except Exception as exc:  # aioice would hand what it cannot parse on as data, or raise
            self._guard.refuse("malformed_stun", f"dropped a malformed STUN datagram from {addr[0]}:{addr[1]}", exc)


    def _pairs_with(self, addr: tuple[Any, ...]) -> bool:
        """Is `addr` the far end of one of this socket's candidate pairs? (The peer's DTLS may come
        before a pair is nominated here: a controlling peer that is the DTLS client sends its
        ClientHello as soon as its own check succeeds. A pair's far end is an address the peer gave
        in its offer or proved with an authenticated check.)"""
        remote = (addr[0], addr[1])
        return any(pair.protocol is self and pair.remote_addr == remote for pair in self.receiver._check_list)


class HostGathering:
    """How a node's sessions gather ICE candidates: its plan, its port range, its datagram guard."""

    def __init__(self, plan: IcePlan, guard: DatagramGuard | None = None) -> None:
        self.plan = plan
        self.pool = PortPool(*plan.ports) if plan.ports else None
        self.guard = guard or DatagramGuard()

    def apply(self, pc: RTCPeerConnection) -> None:
        """Apply to every ICE gatherer `pc` has (call after setRemoteDescription, before answering)."""
        for transceiver in pc.getTransceivers():
            self._plan(transceiver.sender.transport.transport.iceGatherer._connection)
        sctp = pc.sctp
        if sctp is not None:
            self._plan(sctp.transport.transport.iceGatherer._connection)

    def _plan(self, connection: aioice.ice.Connection) -> None:
        if getattr(connection, "_tallylight_planned", False):
            return
        _require(connection, ("_nominated", "_check_list", "_protocols"))
        plan = self.plan

        async def host_candidates(component: int, addresses: list[str], timeout: int = 5) -> list[Any]:
            loop = asyncio.get_running_loop()
            candidates = []
            for bind, announced in plan.pairs():
                endpoint = await self._bind(loop, connection, bind)
                if endpoint is None:
                    continue
                transport, protocol = endpoint
                port = transport.get_extra_info("sockname")[1]
                protocol.local_candidate = aioice.Candidate(
                    foundation=getattr(aioice.ice, "candidate_foundation")("host", "udp", announced),
                    component=component,
                    transport="udp",
                    priority=getattr(aioice.ice, "candidate_priority")(component, "host"),
                    host=announced,
                    port=port,
                    type="host",
                )
                connection._protocols.append(protocol)
                candidates.append(protocol.local_candidate)
            return candidates

        connection.get_component_candidates = host_candidates  # type: ignore[method-assign]
        connection._tallylight_planned = True  # type: ignore[attr-defined]

    async def _bind(self, loop: asyncio.AbstractEventLoop, connection: aioice.ice.Connection,
                    address: str) -> tuple[Any, Any] | None:
        ports = self.pool.candidates() if self.pool is not None else iter([0])
        for port in ports:
            try:
                transport, protocol = await loop.create_datagram_endpoint(
                    lambda: _GuardedStunProtocol(connection, self.guard), local_addr=(address, port)
                )
            except OSError:
                continue
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
            return transport, protocol
        log.warning("no free UDP port on %s in the configured range", address)
        return None


def plan_gathering(pc: RTCPeerConnection, plan: IcePlan) -> None:
    """Host candidates on `plan` for a peer of its own (test and load-test clients)."""
    HostGathering(plan).apply(pc)


async def close_peer(pc: RTCPeerConnection, timeout: float = 5.0) -> None:
    """Close `pc`; if aiortc's close does not finish in `timeout` (a task it waits for died), close its
    ICE connections directly, so its sockets are freed whatever state it is in."""
    closing = asyncio.ensure_future(pc.close())
    done, _ = await asyncio.wait([closing], timeout=timeout)
    if done:
        closing.result()
        release_peer(pc)
        return
    closing.cancel()
    log.warning("a peer connection did not close within %g s; its transports are closed directly", timeout)
    connections = {id(c): c for c in (t.sender.transport.transport._connection for t in pc.getTransceivers())}
    if pc.sctp is not None:
        connection = pc.sctp.transport.transport._connection
        connections[id(connection)] = connection
    for connection in connections.values():
        try:
            await asyncio.wait_for(connection.close(), timeout)
        except Exception as exc:
            log.warning("closing an ICE connection failed: %s", exc)
    release_peer(pc)


_PATCHED = ("_handle_rtcp_packet", "_handle_rtp_data", "_handle_rtcp_data", "_run_rtcp", "get_component_candidates",
            "_data_channel_receive")


def release_peer(pc: RTCPeerConnection) -> None:
    """Break the reference cycles of a closed peer connection, so that reference counting frees it and
    its buffers, keys and sockets' objects at once.

    aiortc's objects point at each other through event listeners (the connection listens to its
    transports), and the methods patched onto them here are closures that point back at their
    objects: a closed connection was freed only by a full garbage collection, which a busy process
    does every tens of minutes (`signaling.cli` tunes it so), so memory grew with every viewer that
    came and went (about 1,500 objects each, 1,000 of them the rate buckets of a receiver's bitrate
    estimator).
    """
    objects: list[Any] = [pc]
    for transceiver in pc.getTransceivers():
        sender, receiver = transceiver.sender, transceiver.receiver
        objects += [transceiver, sender, receiver]
        dtls = sender.transport
        if dtls is not None:
            objects += [dtls, dtls.transport, dtls.transport.iceGatherer, dtls.transport._connection]
    sctp = pc.sctp
    if sctp is not None:
        objects += [sctp, sctp.transport, sctp.transport.transport, sctp.transport.transport._connection]
    for obj in {id(o): o for o in objects}.values():
        remove = getattr(obj, "remove_all_listeners", None)
        if remove is not None:
            remove()
        instance = getattr(obj, "__dict__", {})
        for name in _PATCHED:
            instance.pop(name, None)
        if isinstance(obj, aioice.ice.Connection):  # its sockets' protocols and pairs point back at it
            obj._protocols.clear()
            obj._check_list.clear()
            obj._nominated.clear()


def restart_ice(pc: RTCPeerConnection, remote_ufrag: str, remote_pwd: str) -> tuple[str, str, list[str]]:
    """An ICE restart answered on the controlled side (RFC 8445 section 9): fresh local credentials,
    the peer's new ones, and our (unchanged) host candidates; (ufrag, pwd, candidate lines).

    aiortc has no restartIce(); aioice checks incoming requests against the current credentials and
    nominates whatever pair the controlling peer then selects, so swapping them is all a restart needs.
    """
    connections = {id(c): c for c in (t.sender.transport.transport.iceGatherer._connection for t in pc.getTransceivers())}
    if not connections:
        raise InternalsChanged("no ICE connection to restart")
    ufrag, pwd = random_string(4), random_string(22)
    lines: list[str] = []
    for connection in connections.values():
        _require(connection, ("_local_username", "_local_password", "remote_username", "remote_password"))
        connection._local_username = ufrag
        connection._local_password = pwd
        connection.remote_username = remote_ufrag
        connection.remote_password = remote_pwd
        lines.extend(c.to_sdp() for c in connection.local_candidates)
    return ufrag, pwd, lines



# --- data channels ---------------------------------------------------------------------------------


def tolerate_invalid_text(sctp: RTCSctpTransport) -> None:
    """Hand a data channel's text message that is not valid UTF-8 on as bytes, for the application to
    refuse; aiortc would raise in its receive loop and tear down the whole peer connection."""
    original = sctp._data_channel_receive

    async def receive(stream_id: int, pp_id: int, data: bytes) -> None:
        if pp_id == WEBRTC_STRING:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                pp_id = WEBRTC_BINARY
        await original(stream_id, pp_id, data)

    sctp._data_channel_receive = receive  # type: ignore[method-assign]


def send_texts(channel: RTCDataChannel, texts: list[bytes]) -> None:
    """`channel.send(text)` for each of `texts` (UTF-8 encoded by the caller, once for all its channels),
    in order, with one SCTP flush run at once in this call.

    aiortc queues each message and starts a task to flush the queue: with one message per channel per
    chat frame, that is one task per data-channel client per frame, about a quarter of their fan-out's cost.
    The flush's awaits (SCTP, DTLS, ICE) all complete without waiting, so it runs here instead; should
    one ever wait, a task finishes it. Empty and oversized messages take aiortc's own path.
    """
    sctp = channel.transport
    limit = sctp._remote_max_message_size
    queued = False
    try:
        for data in texts:
            if channel.readyState != "open" or not data or (limit and len(data) > limit):
                channel.send(data.decode("utf-8"))  # raises as aiortc does, or sends the rare case its own way
                continue
            channel._addBufferedAmount(len(data))
            sctp._data_channel_queue.append((channel, WEBRTC_STRING, data))
            queued = True
    finally:  # what was queued before a refusal still goes
        if queued:
            _run_now(sctp._data_channel_flush())


def _run_now(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run `coroutine` up to its first real wait in this call (Python 3.12's eager task start, by hand)."""
    try:
        waiting = coroutine.send(None)
    except StopIteration:
        return
    except Exception as exc:  # e.g. DTLS already closed under an "open" channel: as with aiortc's own task,
        log.debug("data channel flush failed: %s", exc)  # the sender carries on (a fan-out must reach the rest)
        return
    asyncio.ensure_future(_carry_on(coroutine, waiting))


async def _carry_on(coroutine: Coroutine[Any, Any, None], waiting: Any) -> None:
    while True:
        if isinstance(waiting, asyncio.Future):
            waiting._asyncio_future_blocking = False
            await asyncio.wait([waiting])
        else:  # a bare yield: `await asyncio.sleep(0)`
            await asyncio.sleep(0)
        try:
            waiting = coroutine.send(None)
        except StopIteration:
            return
        except Exception as exc:
            log.debug("data channel flush failed: %s", exc)
            return
