"""The encoded-frame sink interface: depacketised frames of a room's tracks, for in-process consumers.

The recorder, the HLS transcoder and the live thumbnails are such consumers, like any participant of
the room. A frame is what the publisher encoded (H.264 in Annex B, VP8, Opus; an RTMP encoder's AAC
as AAC, its AudioSpecificConfig in `config`), never a decoded picture, and always whole:
`sfu.frame_assembler` hands on no frame with a packet missing, nor one after such a frame until the
next keyframe. It comes with what a consumer needs to place it in time:
its RTP timestamp and the publisher's latest RTCP sender-report mapping for the track (shared by
audio and video, so lip sync survives), and which publisher connection it came from (`source`; a
takeover starts a new one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sfu.sender_reports import ClockMapping

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    kind: str  # "audio" | "video"
    codec: str  # "H264", "VP8", "opus", "aac"
    data: bytes
    rtp_timestamp: int
    clock_rate: int
    keyframe: bool
    mapping: ClockMapping | None  # the publisher's latest sender report for this track, None before the first
    source: str  # the publisher connection (its session id); a new one means timestamps start afresh
    kinds: tuple[str, ...]  # every kind this publisher sends
    received_at: float  # this server's wall clock (time.time()) when the frame was complete
    config: bytes = b""  # the codec's configuration where it is not in the frames (AAC's AudioSpecificConfig)

    def sender_time(self, mapping: ClockMapping | None = None) -> float | None:
        """The publisher's capture time of this frame in NTP seconds, from its sender report (or
        `mapping`, a later report of the same track)."""
        m = mapping or self.mapping
        if m is None:
            return None
        delta = (self.rtp_timestamp - m.rtp_timestamp) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 0x100000000
        return m.ntp_seconds + delta / self.clock_rate


class FrameSink(Protocol):
    def on_frame(self, room: str, frame: EncodedFrame) -> None:
        """One encoded frame; called on the event loop, so it must not block."""


class FrameSinks:
    """The sinks of a node, by room."""

    def __init__(self) -> None:
        self._sinks: dict[str, list[FrameSink]] = {}
        self.frames = 0
        # Set by the node: ask the room's publisher for a keyframe (coalesced with every other request).
        self.keyframe_requester: Callable[[str], None] = lambda room: None

    def add(self, room: str, sink: FrameSink) -> None:
        self._sinks.setdefault(room, []).append(sink)

    def remove(self, room: str, sink: FrameSink) -> None:
        sinks = self._sinks.get(room, [])
        if sink in sinks:
            sinks.remove(sink)
        if not sinks:
            self._sinks.pop(room, None)

    def wanted(self, room: str) -> bool:
        """Does anything take this room's frames? (When not, nobody re-assembles them.)"""
        return room in self._sinks

    def request_keyframe(self, room: str) -> None:
        self.keyframe_requester(room)

    def deliver(self, room: str, frame: EncodedFrame) -> None:
        self.frames += 1
        for sink in tuple(self._sinks.get(room, ())):
            try:
                sink.on_frame(room, frame)
            except Exception:
                log.exception("frame sink %r failed", sink)
