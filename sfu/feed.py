"""One kind of media in a room (audio or video): what the publisher sends, fanned out to subscribers.

The feed outlives a publisher connection: when the broadcaster reconnects with the same format, the new
connection feeds the same subscribers, who see one continuous stream (their rewriters open a new epoch
and they wait for the next keyframe).

Everything on the packet path (`on_rtp`) is synchronous: no awaits, no logging, no per-subscriber
allocation beyond the packet it writes. Upstream RTCP (NACK, PLI) is sent from the node's tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from sfu.keyframe import is_keyframe_start
from sfu.keyframe_requests import KeyframeRequests
from sfu.loss_tracker import LossTracker
from sfu.media_format import MediaFormat
from sfu.packet_cache import PacketCache
from sfu.sender_reports import NTP_EPOCH_OFFSET, ClockMapping, ntp_to_seconds

if TYPE_CHECKING:
    from sfu.downtrack import DownTrack


class Upstream(Protocol):
    """The publisher connection feeding a feed, as far as feedback is concerned."""

    async def request_keyframe(self, media_ssrc: int) -> None: ...

    async def nack(self, media_ssrc: int, lost: list[int]) -> None: ...


class NoUpstream:
    async def request_keyframe(self, media_ssrc: int) -> None:
        return None

    async def nack(self, media_ssrc: int, lost: list[int]) -> None:
        return None


class Feed:
    def __init__(self, format: MediaFormat, clock: Callable[[], float] = time.monotonic) -> None:
        self.format = format
        self.kind = format.kind
        self._clock = clock
        self._codec = format.codec
        self._video = format.kind == "video"
        self.cache = PacketCache(size=512 if self._video else 64)
        self.cache.now = clock()
        self.loss = LossTracker(clock)
        self.keyframes = KeyframeRequests(clock)
        self.downtracks: list[DownTrack] = []
        self.switching: list[DownTrack] = []  # down tracks moving here at this feed's next keyframe
        self.upstream: Upstream = NoUpstream()
        self.media_ssrc = 0
        self.mapping: ClockMapping | None = None
        self.packets_in = 0
        self.octets_in = 0
        self.bitrate = 0.0  # bits per second the publisher sent over the last second or so
        self.frames_in = 0  # video frames (RTP marker bits) received
        self.last_keyframe_at = 0.0  # when the last keyframe began to arrive (0: none yet)
        self.keyframe_interval = 0.0  # seconds between the last two (0: fewer than two yet)
        self._rate_mark = (clock(), 0)  # (when, octets_in) the bitrate was last measured from
        self._send_pli = False

    # --- the packet path ---

    def on_rtp(self, packet: bytes) -> None:
        """One packet from the publisher (decrypted, RTX already unwrapped)."""
        seq = (packet[2] << 8) | packet[3]
        self.cache.put(seq, packet)
        self.loss.received(seq)
        keyframe = self._video and is_keyframe_start(self._codec, packet)
        if self._video and packet[1] & 0x80:
            self.frames_in += 1
        if keyframe:
            now = self._clock()
            if self.last_keyframe_at:
                self.keyframe_interval = now - self.last_keyframe_at
            self.last_keyframe_at = now
            self.keyframes.keyframe_arrived()
            self.loss.keyframe_arrived(seq)
            if self.switching:
                for down in self.switching:
                    down.adopt(self)
                self.switching.clear()
        self.packets_in += 1
        self.octets_in += len(packet)
        now_ntp = time.time() + NTP_EPOCH_OFFSET
        for down in self.downtracks:
            down.write(packet, keyframe, now_ntp)

    # --- feedback ---

    def request_keyframe(self) -> None:
        if self._video and self.keyframes.request():
            self._send_pli = True

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        if not ntp_timestamp:
            return  # a report sent before any media (aiortc does): it maps nothing
        self.mapping = ClockMapping(ntp_to_seconds(ntp_timestamp), rtp_timestamp, self.format.clock_rate, self._clock())

    def attach(self, upstream: Upstream, media_ssrc: int) -> None:
        """A (new) publisher connection feeds this from now on."""
        self.upstream = upstream
        self.media_ssrc = media_ssrc
        self.mapping = None
        self.loss = LossTracker(self._clock)
        self.cache.clear()
        for down in self.downtracks:
            down.source_changed()

    async def tick(self) -> None:
        """Send what feedback is due upstream; called by the node every few tens of milliseconds."""
        now = self._clock()
        self.cache.now = now
        since, octets = self._rate_mark
        if now - since >= 1.0:
            self.bitrate = (self.octets_in - octets) * 8 / (now - since)
            self._rate_mark = (now, self.octets_in)
        if not self.media_ssrc:
            return
        lost, keyframe_needed = self.loss.poll()
        if lost:
            await self.upstream.nack(self.media_ssrc, lost)
        if keyframe_needed:
            self.request_keyframe()
        if self._send_pli or (self._video and self.keyframes.due()):
            self._send_pli = False
            await self.upstream.request_keyframe(self.media_ssrc)
