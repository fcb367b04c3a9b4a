"""A WHIP publisher: one incoming connection whose RTP is forwarded into the room's feeds."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from aiortc import RTCRtpReceiver, RTCRtpTransceiver, RTCSessionDescription
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError

from sfu import aiortc_internals as internals
from sfu import rtx
from sfu.errors import BadOffer, UnsupportedMedia
from sfu.feed import Feed
from sfu.frame_assembler import FrameAssembler, FrameHandler
from sfu.frame_sink import EncodedFrame, FrameSinks
from sfu.keyframe import is_keyframe_frame
from sfu.media_format import AUDIO_CODECS, VIDEO_CODECS, MediaFormat
from sfu.negotiation import SENDING, parse_offer, payload_maps, with_bandwidth
from sfu.sender_reports import ClockMapping
from sfu.session import Session

log = logging.getLogger(__name__)

SSRC_SILENCE = 2.0  # seconds a stream's SSRC must be silent before another on its payload type replaces it
_AIORTC_ERRORS = (ValueError, InternalError, InvalidAccessError, InvalidStateError, OperationError)


class _ReceiverUpstream:
    """Feedback to the publisher for one track, through its receiver."""

    __slots__ = ("receiver",)

    def __init__(self, receiver: RTCRtpReceiver) -> None:
        self.receiver = receiver

    async def request_keyframe(self, media_ssrc: int) -> None:
        await internals.send_pli(self.receiver, media_ssrc)

    async def nack(self, media_ssrc: int, lost: list[int]) -> None:
        await internals.send_nack(self.receiver, media_ssrc, lost)


class _Route:
    """Where packets of one payload type go: the feed (viewers) and the assembler (frame sinks)."""

    __slots__ = ("feed", "media_pt", "upstream", "assembler", "ssrc_seen_at")

    def __init__(self, feed: Feed, media_pt: int, upstream: _ReceiverUpstream | None, assembler: FrameAssembler) -> None:
        self.feed = feed
        self.media_pt = media_pt  # for an RTX payload type, the media payload type it repairs; else 0
        self.upstream = upstream
        self.assembler = assembler
        self.ssrc_seen_at = 0.0  # when the feed's media SSRC last sent on this route


class Publisher(Session):
    kind = "publish"
    # The audio the frame sinks get (the recorder and the ladder fix theirs at a stream's start): a
    # publisher taking over a stream must hand them the same, or a new stream starts.
    sink_audio = "opus"

    def __init__(self, room: str, user: str | None, clock: Callable[[], float], sinks: FrameSinks, client: str = "") -> None:
        super().__init__(room, user, clock, client)
        self.formats: dict[str, MediaFormat] = {}  # by kind
        self._routes: dict[int, _Route] = {}
        self._pending: dict[str, tuple[int, int | None, RTCRtpTransceiver]] = {}  # kind -> (pt, rtx pt, transceiver)
        self._sinks = sinks
        self._feeds: dict[str, Feed] = {}
        self.assemblers: dict[str, FrameAssembler] = {}  # by kind
        self._guard = internals.DatagramGuard()
        self._assembling = False  # whether the room had frame sinks at the last packet
        self.last_packet_at = self.created_at
        self.media_seen = False  # silence is timed from the first packet once there is one
        self.octets_in = 0
        self._rate_samples: deque[tuple[float, int]] = deque(maxlen=64)  # (when, octets_in), for the ceiling

    async def negotiate(self, offer: str, gathering: internals.HostGathering, max_bitrate: int = 0) -> str:
        """The SDP answer; with `max_bitrate`, it tells the publisher the ceiling (b=AS, b=TIAS)."""
        checked = parse_offer(offer, publishing=True)
        pc = self.pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(checked.sdp, "offer"))
        except OperationError as exc:
            raise UnsupportedMedia(f"no codec in the offer can be forwarded: {exc}") from None
        except _AIORTC_ERRORS as exc:
            raise BadOffer(str(exc)) from None
        gathering.apply(pc)
        self._guard = gathering.guard
        internals.guard_transports(pc, gathering.guard, self._on_rtp)  # packets go nowhere until `bind`
        await pc.setLocalDescription(await pc.createAnswer())
        self._take_formats(pc.localDescription.sdp)
        answer = checked.answer(pc.localDescription.sdp)
        return with_bandwidth(answer, max_bitrate) if max_bitrate else answer

    def _take_formats(self, negotiated: str, sending_only: bool = False) -> None:
        """What each transceiver will receive, read from the description that numbers it (`negotiated`:
        the answer, ours or the peer's; with `sending_only`, the peer's, of which only the sections it
        sends on count); UnsupportedMedia unless all of it can be forwarded."""
        maps = payload_maps(negotiated, SENDING if sending_only else None)
        for transceiver in self.pc.getTransceivers():
            mapping = maps.get(transceiver.mid or "")
            if mapping is None:
                continue
            fmt = mapping.format
            allowed = VIDEO_CODECS if fmt.kind == "video" else AUDIO_CODECS
            if fmt.codec not in allowed:
                raise UnsupportedMedia(f"{fmt.kind} codec {fmt.codec} cannot be forwarded; use {' or '.join(allowed)}")
            self.formats[fmt.kind] = fmt
            self._pending[fmt.kind] = (mapping.payload_type, mapping.rtx_payload_type, transceiver)
        if not self.formats:
            raise UnsupportedMedia("the offer has no audio or video the SFU can forward (H.264, VP8, Opus)")

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.formats)

    def track_mapping(self, kind: str) -> ClockMapping | None:
        feed = self._feeds.get(kind)
        return None if feed is None or not self._routes else feed.mapping

    def bind(self, feeds: dict[str, Feed]) -> None:
        """Feed these (the room's) from now on, and start taking packets."""
        self._feeds = feeds
        for kind, (pt, rtx_pt, transceiver) in self._pending.items():
            feed = feeds[kind]
            fmt = self.formats[kind]
            assembler = FrameAssembler(fmt.codec, kind, fmt.clock_rate, self._frame_handler(kind),
                                       feed.request_keyframe, self._clock)
            self.assemblers[kind] = assembler
            internals.prepare_receiver(transceiver, self._sender_report_handler(feed), self._guard)
            self._routes[pt] = _Route(feed, 0, _ReceiverUpstream(transceiver.receiver), assembler)
            if rtx_pt is not None:
                self._routes[rtx_pt] = _Route(feed, pt, None, assembler)

    def _frame_handler(self, kind: str) -> FrameHandler:
        fmt = self.formats[kind]
        codec, rate, video = fmt.codec, fmt.clock_rate, kind == "video"

        def on_frame(data: bytes, rtp_timestamp: int) -> None:
            keyframe = video and is_keyframe_frame(codec, data)
            frame = EncodedFrame(kind, codec, data, rtp_timestamp, rate, keyframe, self.track_mapping(kind), self.id,
                                 self.kinds, time.time())
            self._sinks.deliver(self.room, frame)

        return on_frame

    @staticmethod
    def _sender_report_handler(feed: Feed) -> Callable[[int, int, int], None]:
        def on_report(ssrc: int, ntp: int, rtp_timestamp: int) -> None:
            if ssrc == feed.media_ssrc:
                feed.on_sender_report(ntp, rtp_timestamp)

        return on_report

    def _on_rtp(self, packet: bytes) -> bool:
        """One decrypted packet from the publisher; True when aiortc's receiver should see it too (its
        statistics, receiver reports and REMB): media packets of the stream's SSRC only."""
        route = self._routes.get(packet[1] & 0x7F)
        if route is None or self.closed:
            return False
        feed = route.feed
        now = self._clock()
        if route.media_pt:  # RTX: repair for the media stream
            if not feed.media_ssrc:
                return False
            repaired = rtx.unwrap(packet, route.media_pt, feed.media_ssrc)
            if repaired is None:
                return False
            packet = repaired
        else:
            ssrc = int.from_bytes(packet[8:12], "big")
            if feed.upstream is not route.upstream or (ssrc != feed.media_ssrc and now - route.ssrc_seen_at > SSRC_SILENCE):
                assert route.upstream is not None
                feed.attach(route.upstream, ssrc)  # this connection's stream (or its new SSRC) from now on
                route.assembler.reset()
            elif ssrc != feed.media_ssrc:
                return False  # another SSRC while the stream's own still sends: not ours to forward
            route.ssrc_seen_at = now
        self.last_packet_at = now
        self.media_seen = True
        self.octets_in += len(packet)
        feed.on_rtp(packet)
        if self._sinks.wanted(self.room):
            self._assembling = True
            route.assembler.push(packet)
        elif self._assembling:  # nobody takes frames now: whoever comes next starts at a keyframe
            self._assembling = False
            for assembler in self.assemblers.values():
                assembler.reset()
        return not route.media_pt

    def tick(self) -> None:
        """Give up on frames whose missing packets did not come in time (the node's timer)."""
        for assembler in self.assemblers.values():
            assembler.tick()

    def over_bitrate(self, now: float, ceiling: int, window: float = 5.0, tolerance: float = 1.5) -> str:
        """Why the publisher must go when it sent more than `tolerance` times `ceiling` bits per second
        over the last `window` seconds (called every half second or so); "" while it keeps within."""
        samples = self._rate_samples
        samples.append((now, self.octets_in))
        if not ceiling:
            return ""
        while len(samples) > 2 and now - samples[1][0] >= window:
            samples.popleft()
        since, octets = samples[0]
        if now - since < window:
            return ""
        rate = (self.octets_in - octets) * 8 / (now - since)
        if rate <= ceiling * tolerance:
            return ""
        return f"the publisher sent {rate / 1000:.0f} kbit/s, above the ceiling of {ceiling / 1000:.0f} kbit/s"

    def detach(self) -> None:
        """Stop feeding (a takeover by a newer connection, or the end)."""
        self._routes = {}

    def ending(self, reason: str) -> None:
        """The node ends this publisher's stream for `reason`, and closes it next (a WebRTC peer has
        nobody to tell; an RTMP encoder's log shows it)."""
        return None
