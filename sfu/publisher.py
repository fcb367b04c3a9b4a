"""A WHIP publisher: one incoming connection whose RTP is forwarded into the room's feeds."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpTransceiver, RTCSessionDescription
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError

from sfu import aiortc_internals as internals
from sfu import rtx
from sfu.errors import BadOffer, UnsupportedMedia
from sfu.feed import Feed
from sfu.frame_sink import FrameSinks
from sfu.media_format import AUDIO_CODECS, VIDEO_CODECS, MediaFormat
from sfu.negotiation import parse_offer, payload_maps
from sfu.sender_reports import ClockMapping
from sfu.session import Session

log = logging.getLogger(__name__)

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


class Publisher(Session):
    kind = "publish"

    def __init__(self, room: str, user: str | None, clock: Callable[[], float], sinks: FrameSinks) -> None:
        super().__init__(room, user, clock)
        self.formats: dict[str, MediaFormat] = {}  # by kind
        self._routes: dict[int, tuple[Feed | None, int, _ReceiverUpstream | None]] = {}
        self._pending: dict[str, tuple[int, int | None, RTCRtpTransceiver]] = {}  # kind -> (pt, rtx pt, transceiver)
        self._sinks = sinks
        self._feeds: dict[str, Feed] = {}
        self.last_packet_at = self.created_at
        self.media_seen = False  # silence is timed from the first packet once there is one

    async def negotiate(self, offer: str, plan: internals.IcePlan, pool: internals.PortPool | None) -> str:
        parse_offer(offer, publishing=True)
        pc = self.pc

        @pc.on("track")  # fires inside setRemoteDescription
        def on_track(track: Any) -> None:
            self.spawn(self._sinks.drain(self.room, track, self))

        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        except OperationError as exc:
            raise UnsupportedMedia(f"no codec in the offer can be forwarded: {exc}") from None
        except _AIORTC_ERRORS as exc:
            raise BadOffer(str(exc)) from None
        internals.plan_gathering(pc, plan, pool)
        await pc.setLocalDescription(await pc.createAnswer())
        maps = payload_maps(pc.localDescription.sdp)
        for transceiver in pc.getTransceivers():
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

        return pc.localDescription.sdp

    # --- the track facts frame sinks read (sfu.frame_sink.TrackSource) ---

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.formats)

    def track_format(self, kind: str) -> tuple[str, int] | None:
        fmt = self.formats.get(kind)
        return None if fmt is None else (fmt.codec, fmt.clock_rate)

    def track_mapping(self, kind: str) -> ClockMapping | None:
        feed = self._feeds.get(kind)
        return None if feed is None or not self._routes else feed.mapping

    def bind(self, feeds: dict[str, Feed]) -> None:
        """Feed these (the room's) from now on, and start taking packets."""
        self._feeds = feeds
        for kind, (pt, rtx_pt, transceiver) in self._pending.items():
            feed = feeds[kind]
            upstream = _ReceiverUpstream(transceiver.receiver)
            internals.prepare_receiver(transceiver, self._sender_report_handler(feed))
            self._routes[pt] = (feed, 0, upstream)
            if rtx_pt is not None:
                self._routes[rtx_pt] = (feed, pt, None)
        dtls = self.pc.getTransceivers()[0].receiver.transport
        internals.tap_incoming_rtp(dtls, self._on_rtp)

    @staticmethod
    def _sender_report_handler(feed: Feed) -> Callable[[int, int, int], None]:
        def on_report(ssrc: int, ntp: int, rtp_timestamp: int) -> None:
            if ssrc == feed.media_ssrc:
                feed.on_sender_report(ntp, rtp_timestamp)

        return on_report

    def _on_rtp(self, packet: bytes) -> None:
        route = self._routes.get(packet[1] & 0x7F)
        if route is None or self.closed:
            return
        feed, media_pt, upstream = route
        if feed is None:
            return
        if media_pt:  # RTX: repair for the media stream
            if not feed.media_ssrc:
                return
            repaired = rtx.unwrap(packet, media_pt, feed.media_ssrc)
            if repaired is None:
                return
            packet = repaired
        elif feed.upstream is not upstream:
            assert upstream is not None
            feed.attach(upstream, int.from_bytes(packet[8:12], "big"))
        self.last_packet_at = self._clock()
        self.media_seen = True
        feed.on_rtp(packet)

    def detach(self) -> None:
        """Stop feeding (a takeover by a newer connection, or the end)."""
        self._routes = {}
