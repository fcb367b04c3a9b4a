"""What an RTMP publisher's frames become in a room: RTP packets, as a WebRTC publisher would send them.

- Video: H.264 is passed through. Each frame's NAL units (length-prefixed in FLV) are cut into RTP
  payloads as packetization-mode 1 allows (single NAL unit, STAP-A, FU-A: aiortc's own cutter, the
  one its senders use), the marker on the frame's last packet. RTMP sends SPS and PPS once, in the
  AVC sequence header; WebRTC receivers need them before every keyframe, so they go in front of each.
- Audio: AAC is decoded and encoded once to Opus (48 kHz stereo, 20 ms frames), for every viewer;
  browsers take no AAC over WebRTC.
- Time: both tracks run on the RTMP clock (milliseconds, shared by audio and video), so lip sync holds
  by construction. `RtmpClock` turns it into each track's RTP timestamp and into the clock mapping a
  sender report would give (the wall time of the stream's first tag plus the RTMP time).

Nothing here touches the network: the RTMP session feeds it tags, the node takes its packets.
"""

from __future__ import annotations

import fractions
import random
import struct
import time
from collections.abc import Sequence
from typing import Any

import av
from av.audio.resampler import AudioResampler

from sfu import aiortc_internals as internals
from sfu.rtmp.flv import AacConfig
from sfu.sender_reports import NTP_EPOCH_OFFSET, ClockMapping

_HEADER = struct.Struct("!BBHII")
VIDEO_CLOCK = 90_000
OPUS_CLOCK = 48_000
OPUS_FRAME = 960  # samples per 20 ms
OPUS_BITRATE = 96_000
RESYNC_MS = 200  # AAC arriving this far from where the Opus timeline expects it: start the timeline afresh


class RtmpClock:
    """The RTMP stream's milliseconds as RTP timestamps of each track (random bases, as RFC 3550 asks)
    and as the NTP times a sender report would give them."""

    def __init__(self, wall: float | None = None, monotonic: float | None = None) -> None:
        self._wall = time.time() if wall is None else wall
        self._monotonic = time.monotonic() if monotonic is None else monotonic
        self._first_ms: int | None = None
        self.video_base = random.getrandbits(32)
        self.audio_base = random.getrandbits(32)

    def _since_start(self, ms: int) -> int:
        if self._first_ms is None:
            self._first_ms = ms
        return ms - self._first_ms

    def video(self, ms: int) -> int:
        return (self.video_base + self._since_start(ms) * (VIDEO_CLOCK // 1000)) & 0xFFFFFFFF

    def audio(self, ms: int) -> int:
        return (self.audio_base + self._since_start(ms) * (OPUS_CLOCK // 1000)) & 0xFFFFFFFF

    def ticks(self, ms: int, rate: int) -> int:
        """RTMP time `ms` as ticks of a `rate` Hz clock from the stream's first tag."""
        return round(self._since_start(ms) * rate / 1000)

    def mapping(self, kind: str) -> ClockMapping:
        """The track's clock at the stream's first tag, as if a sender report had said it then."""
        base, rate = (self.video_base, VIDEO_CLOCK) if kind == "video" else (self.audio_base, OPUS_CLOCK)
        return self.mapping_at(base, rate)

    def mapping_at(self, base: int, rate: int) -> ClockMapping:
        return ClockMapping(self._wall + NTP_EPOCH_OFFSET, base, rate, self._monotonic)


class AacTimes:
    """Each AAC access unit's timestamp at the AAC's own sample rate (how the recorder and the HLS
    ladder take it, unchanged): one frame after the last, started again at the RTMP time whenever
    that is more than `RESYNC_MS` away (RTMP's milliseconds alone would make frames 23 and 24 ms long)."""

    def __init__(self, clock: RtmpClock, rate: int, frame: int = 1024) -> None:
        self._clock = clock
        self.rate = rate
        self._frame = frame
        self.base = random.getrandbits(32)
        self._ticks = 0
        self._next_ms: float | None = None

    def stamp(self, ms: int) -> int:
        if self._next_ms is None or abs(ms - self._next_ms) > RESYNC_MS:
            self._ticks = self._clock.ticks(ms, self.rate)
            self._next_ms = ms
        timestamp = (self.base + self._ticks) & 0xFFFFFFFF
        self._ticks += self._frame
        self._next_ms += self._frame * 1000 / self.rate
        return timestamp

    def mapping(self) -> ClockMapping:
        return self._clock.mapping_at(self.base, self.rate)


class H264Cutter:
    """One H.264 track's RTP packets, cut from whole frames (one SSRC, continuous sequence numbers)."""

    def __init__(self, payload_type: int, ssrc: int | None = None) -> None:
        self.payload_type = payload_type
        self.ssrc = (random.getrandbits(32) or 1) if ssrc is None else ssrc
        self._seq = random.getrandbits(16)
        self.parameter_sets: tuple[bytes, ...] = ()  # SPS and PPS from the AVC sequence header

    def frame(self, units: Sequence[bytes | memoryview], rtp_timestamp: int, keyframe: bool) -> list[bytes]:
        """The packets of one frame (its NAL units without length prefixes or start codes)."""
        nals = [bytes(u) for u in units if len(u)]
        if keyframe and self.parameter_sets and not any(n[0] & 0x1F == 7 for n in nals):
            nals = [*self.parameter_sets, *nals]
        payloads = internals.h264_unit_payloads(nals)
        packets = []
        last = len(payloads) - 1
        for i, payload in enumerate(payloads):
            self._seq = (self._seq + 1) & 0xFFFF
            second = (0x80 if i == last else 0) | self.payload_type
            packets.append(_HEADER.pack(0x80, second, self._seq, rtp_timestamp, self.ssrc) + payload)
        return packets


class AacToOpus:
    """AAC access units in, Opus packets out: one decoder, one resampler, one encoder per stream.

    The Opus timeline advances by exactly one frame per packet; it starts at the first AAC unit's RTMP
    time and starts again there whenever the AAC drifts more than `RESYNC_MS` away (a gap in the
    encoder's audio, a clock jump), so audio never lags the video it was captured with."""

    def __init__(self, config: AacConfig, extradata: bytes, payload_type: int, ssrc: int | None = None) -> None:
        self.config = config
        self._decoder: Any = av.CodecContext.create("aac", "r")
        self._decoder.extradata = extradata
        self._resampler = AudioResampler(format="s16", layout="stereo", rate=OPUS_CLOCK, frame_size=OPUS_FRAME)
        self._encoder: Any = av.CodecContext.create("libopus", "w")
        self._encoder.sample_rate = OPUS_CLOCK
        self._encoder.layout = "stereo"
        self._encoder.format = "s16"
        self._encoder.bit_rate = OPUS_BITRATE
        self._encoder.time_base = fractions.Fraction(1, OPUS_CLOCK)
        self._encoder.options = {"application": "audio", "frame_duration": "20"}
        self.payload_type = payload_type
        self.ssrc = (random.getrandbits(32) or 1) if ssrc is None else ssrc
        self._seq = random.getrandbits(16)
        self._next_ms: float | None = None  # RTMP time the next decoded sample belongs at
        self._rtp: int | None = None  # RTP timestamp of the next Opus packet
        self.errors = 0  # AAC units that did not decode (skipped)

    def unit(self, data: bytes | memoryview, ms: int, clock: RtmpClock) -> list[tuple[bytes, int]]:
        """One AAC access unit at RTMP time `ms`: the Opus RTP packets now complete, with their RTP
        timestamps."""
        try:
            frames = self._decoder.decode(av.Packet(bytes(data)))
        except av.FFmpegError:
            self.errors += 1
            return []
        if self._next_ms is None or abs(ms - self._next_ms) > RESYNC_MS:
            self._rtp = clock.audio(ms)
            self._next_ms = ms
        out: list[tuple[bytes, int]] = []
        for frame in frames:
            self._next_ms += frame.samples * 1000 / frame.sample_rate
            frame.pts = None
            try:
                chunks = self._resampler.resample(frame)
            except ValueError:  # the decoded rate or layout changed (HE-AAC's SBR doubles it): resample anew
                self._resampler = AudioResampler(format="s16", layout="stereo", rate=OPUS_CLOCK, frame_size=OPUS_FRAME)
                chunks = self._resampler.resample(frame)
            for chunk in chunks:
                for packet in self._encoder.encode(chunk):
                    out.append(self._packet(bytes(packet)))
        return out

    def _packet(self, payload: bytes) -> tuple[bytes, int]:
        assert self._rtp is not None
        timestamp = self._rtp
        self._rtp = (self._rtp + OPUS_FRAME) & 0xFFFFFFFF
        self._seq = (self._seq + 1) & 0xFFFF
        return _HEADER.pack(0x80, self.payload_type, self._seq, timestamp, self.ssrc) + payload, timestamp
