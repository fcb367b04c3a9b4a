"""An RTMP encoder as a room's publisher: its FLV tags become the packets of the room's feeds (what
WebRTC viewers get) and the frames of its sinks (the recorder, the HLS ladder), as a WHIP publisher's do.

The room is taken at the first video frame that can be forwarded: by then the encoder sent its AVC
sequence header (and the AAC one, if it sends audio), so the feeds get their formats from the start.
When the metadata announces audio whose header is not there yet, the room waits for it through up to
2 s of video; audio whose header comes later still is left out.
For anything this node cannot forward the encoder is told why in its log (`stop`), before anyone is
told the channel is live, and the connection closes:

- video other than H.264 (enhanced RTMP's HEVC, AV1, VP9) and audio other than AAC.

H.264 with B-frames (a frame shown after a later one; a non-zero composition offset says so) is
re-encoded once without them (`reencode.py` says why: Chromium shows none of them), from the first
such frame on; viewers, the recorder and the ladder all get the re-encoded video then.

RTMP has no way to ask the encoder for a keyframe or for a lost packet (TCP loses none): a viewer who
joins a passed-through stream waits for the encoder's next keyframe (OBS sends one every 2 s by
default); a re-encoded stream makes one when asked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sfu import aiortc_internals as internals
from sfu.errors import AlreadyPublishing, NodeFull, SfuError
from sfu.feed import Feed, NoUpstream
from sfu.frame_sink import EncodedFrame, FrameSinks
from sfu.media_format import MediaFormat
from sfu.publisher import Publisher
from sfu.rtmp.flv import AAC, AVC, AvcConfig, FlvError, aac_config, audio_tag, avc_config, nal_units, video_tag
from sfu.rtmp.reencode import WithoutBFrames
from sfu.rtmp.rtp import OPUS_CLOCK, VIDEO_CLOCK, AacTimes, AacToOpus, H264Cutter, RtmpClock
from sfu.sender_reports import ClockMapping

log = logging.getLogger(__name__)

VIDEO_PT, AUDIO_PT = 102, 111  # the feed's own numbering; every viewer's packets are renumbered on the way out
_START_CODE = b"\x00\x00\x00\x01"
DEFAULT_KBPS = 4000  # the re-encode's ceiling when the encoder's metadata names no video bitrate
AUDIO_WAIT_MS = 2000  # video the room waits through for an AAC header the metadata announced


_AUDIO_FORMATS = {0: "linear PCM", 1: "ADPCM", 2: "MP3", 3: "linear PCM", 4: "Nellymoser", 5: "Nellymoser",
                  6: "Nellymoser", 7: "G.711 A-law", 8: "G.711 mu-law", 11: "Speex", 14: "MP3"}


def audio_name(sound_format: int, after: bytes) -> str:
    """An FLV audio tag's format in words; enhanced RTMP's (format 9) by the FourCC that follows."""
    if sound_format == 9 and len(after) == 4:
        return f"enhanced RTMP {after.decode('ascii', 'replace')!r}"
    return _AUDIO_FORMATS.get(sound_format, f"format {sound_format}")


def refusal(exc: Exception) -> str:
    """Words for an encoder's log about why the node will not take its stream."""
    if isinstance(exc, AlreadyPublishing):
        return "this channel is already live from another encoder or the studio: stop that one first"
    if isinstance(exc, NodeFull):
        return f"this server cannot take the stream now ({exc}); try again in a moment"
    return str(exc) or type(exc).__name__


class IngestRate:
    """Bytes and video frames per second the encoder sent, over its last `seconds` whole seconds
    (counted in place: nothing is allocated per tag)."""

    def __init__(self, seconds: int = 5) -> None:
        self._bytes = [0] * (seconds + 1)
        self._frames = [0] * (seconds + 1)
        self._second = 0
        self._first: int | None = None  # the second of the first tag: a young stream is averaged over less

    def _roll(self, now: float) -> int:
        second = int(now)
        if second != self._second:
            size = len(self._bytes)
            for skipped in range(self._second + 1, min(second, self._second + size) + 1):
                self._bytes[skipped % size] = self._frames[skipped % size] = 0
            if second - self._second > size:
                self._bytes[second % size] = self._frames[second % size] = 0
            self._second = second
        return second % len(self._bytes)

    def add(self, now: float, size: int, frame: bool) -> None:
        if self._first is None:
            self._first = int(now)
        i = self._roll(now)
        self._bytes[i] += size
        self._frames[i] += frame

    def per_second(self, now: float) -> tuple[float, float]:
        """(bits, video frames) per second over the whole seconds before this one (leaving out the
        stream's first, which it joined part-way)."""
        self._roll(now)
        if self._first is None:
            return 0.0, 0.0
        second, size = int(now), len(self._bytes)
        seconds = range(max(self._first + 1, second - (size - 1)), second)
        if not seconds:
            return 0.0, 0.0
        octets = sum(self._bytes[s % size] for s in seconds)
        frames = sum(self._frames[s % size] for s in seconds)
        return octets * 8 / len(seconds), frames / len(seconds)


class RtmpPublisher(Publisher):
    kind = "rtmp"

    def __init__(self, room: str, user: str | None, clock: Callable[[], float], sinks: FrameSinks, client: str,
                 on_ready: Callable[[RtmpPublisher], None], on_end: Callable[[RtmpPublisher, str], None]) -> None:
        super().__init__(room, user, clock, sinks, client)
        self._on_ready = on_ready
        self._on_end = on_end
        self._stop: Callable[[str], None] = lambda reason: None
        self._time = RtmpClock()
        self._avc: AvcConfig | None = None
        self._video: H264Cutter | None = None
        self._audio: AacToOpus | None = None  # for WebRTC viewers
        self._aac: AacTimes | None = None  # the AAC as it came, for the sinks
        self._aac_config = b""
        self._aac_mapping: ClockMapping | None = None
        self._upstream = NoUpstream()  # an RTMP encoder takes no PLI or NACK
        self._reencoder: WithoutBFrames | None = None  # for H.264 with B-frames
        self.ingest = IngestRate()
        self._end_reason = ""  # why the node ends the stream, for the encoder's log
        self._kbps = DEFAULT_KBPS
        self._audio_announced = False  # the metadata names an audio codec
        self._first_video_ms: int | None = None
        self._mappings: dict[str, ClockMapping] = {}  # each track's clock, as its sender reports would map it
        self.ready = False  # the room is taken; media flows into its feeds
        self.ended = False
        # Called once, when the publisher took its room or ended before it could (the caller's claim
        # on the channel may then go).
        self.on_settled: Callable[[], None] = lambda: None
        self._settled = False

    # --- what the RTMP connection tells (sfu.rtmp.session.Publisher) ---

    def started(self, stop: Callable[[str], None]) -> None:
        self._stop = stop

    def on_metadata(self, values: dict[str, Any]) -> None:
        self._audio_announced = bool(values.get("audiocodecid"))
        kbps = values.get("videodatarate")
        if isinstance(kbps, (int, float)) and 100 <= kbps <= 100_000:
            self._kbps = int(kbps * 1.25)  # room above the encoder's average for its peaks

    def on_video(self, timestamp: int, payload: bytes) -> None:
        self.ingest.add(self._clock(), len(payload), True)
        try:
            self._video_tag(timestamp, payload)
        except Exception as exc:  # a stream that breaks the codecs: tell the encoder, keep the node
            log.exception("rtmp publisher %s in %s: a video tag failed", self.id[:8], self.room)
            self.refuse(f"the server could not take this video: {type(exc).__name__}")

    def on_audio(self, timestamp: int, payload: bytes) -> None:
        self.ingest.add(self._clock(), len(payload), False)
        try:
            self._audio_tag(timestamp, payload)
        except Exception as exc:
            log.exception("rtmp publisher %s in %s: an audio tag failed", self.id[:8], self.room)
            self.refuse(f"the server could not take this audio: {type(exc).__name__}")

    def _video_tag(self, timestamp: int, payload: bytes) -> None:
        try:
            tag = video_tag(payload)
            if tag.codec != AVC:
                name = tag.fourcc or f"codec {tag.codec}"
                return self.refuse(f"video in {name} cannot be forwarded; send H.264 (x264, NVENC H.264, ...)")
            if tag.packet == 0:
                self._avc = avc_config(tag.data)
                if self._video is not None:
                    self._video.parameter_sets = (*self._avc.sps, *self._avc.pps)
                return None
            if tag.packet != 1 or self._avc is None:
                return None  # end of sequence, or frames before the header: nothing to show yet
            units = nal_units(tag.data, self._avc.length_size)
        except FlvError as exc:
            return self.refuse(f"a video tag that cannot be read: {exc}")
        if not self.ready:
            if self._first_video_ms is None:
                self._first_video_ms = timestamp
            if self._audio is None and self._audio_announced and timestamp - self._first_video_ms < AUDIO_WAIT_MS:
                return None  # its audio header is still to come: the room's formats are fixed once it is live
            self._go_live()
            if not self.ready:
                return None
        assert self._video is not None
        if tag.composition and self._reencoder is None:
            self._reencoder = WithoutBFrames(self._reencoded, self._avc.profile, self._kbps, self.id[:8],
                                             self._reencode_failed)
            log.info("rtmp publisher %s in %s sends B-frames: its video is re-encoded without them", self.id[:8],
                     self.room)
        if self._reencoder is not None:
            self._reencoder.push(self._annex_b(units, tag.keyframe), timestamp + tag.composition, timestamp,
                                 tag.keyframe)
            return None
        rtp_timestamp = self._time.video(timestamp)
        self._forward("video", self._video.frame(units, rtp_timestamp, tag.keyframe))
        if self._sinks.wanted(self.room):
            self._deliver("video", "H264", self._annex_b(units, tag.keyframe), rtp_timestamp, VIDEO_CLOCK, tag.keyframe)

    def ingest_rates(self) -> tuple[float, float]:
        """(bits, video frames) per second the encoder sent over the last seconds."""
        return self.ingest.per_second(self._clock())

    @property
    def reencoded(self) -> bool:
        return self._reencoder is not None

    @property
    def reencode_dropped(self) -> int:
        return self._reencoder.dropped if self._reencoder is not None else 0

    def _annex_b(self, units: list[memoryview], keyframe: bool) -> bytes:
        assert self._video is not None
        prefix = _START_CODE + _START_CODE.join(self._video.parameter_sets) if keyframe else b""
        return prefix + b"".join(_START_CODE + bytes(u) for u in units)

    def _reencode_failed(self, why: str) -> None:
        """The re-encode stopped: without it viewers would see a frozen picture while the audio plays on."""
        self.refuse(f"the server could not re-encode this video ({why}); set B-frames to 0 in the encoder")

    def _reencoded(self, annex_b: bytes, pts_ms: int, keyframe: bool) -> None:
        """A frame from the re-encode (on the event loop, in presentation order)."""
        if self._video is None or self.closed:
            return
        rtp_timestamp = self._time.video(pts_ms)
        self._forward("video", self._video.frame(internals.h264_units(annex_b), rtp_timestamp, keyframe))
        if self._sinks.wanted(self.room):
            self._deliver("video", "H264", annex_b, rtp_timestamp, VIDEO_CLOCK, keyframe)

    def _audio_tag(self, timestamp: int, payload: bytes) -> None:
        try:
            tag = audio_tag(payload)
            if tag.format != AAC:
                return self.refuse(f"audio in {audio_name(tag.format, bytes(tag.data[:4]))} cannot be forwarded; "
                                   "send AAC")
            if tag.packet == 0:
                if self._audio is None and not self.ready:  # (audio that starts later than the video is left out)
                    config = aac_config(tag.data)
                    self._audio = AacToOpus(config, bytes(tag.data), AUDIO_PT)
                    self._aac = AacTimes(self._time, config.sample_rate)
                    self._aac_config = bytes(tag.data)
                    self.sink_audio = f"aac:{config.sample_rate}:{self._aac_config.hex()}"
                return None
        except FlvError as exc:
            return self.refuse(f"an audio tag that cannot be read: {exc}")
        if not self.ready or self._audio is None:
            return None
        for packet, _ in self._audio.unit(tag.data, timestamp, self._time):
            self._forward("audio", (packet,))
        if self._sinks.wanted(self.room) and self._aac is not None:  # the AAC itself, for HLS and recordings
            frame = EncodedFrame("audio", "aac", bytes(tag.data), self._aac.stamp(timestamp), self._aac.rate, False,
                                 self._aac_mapping, self.id, self.kinds, time.time(), self._aac_config)
            self._sinks.deliver(self.room, frame)

    def end(self, reason: str, lost: bool = False) -> None:
        """The RTMP connection ended: the encoder stopped, or it was closed, or (`lost`) it dropped.
        A live stream whose encoder dropped stays, silent, as a WebRTC publisher's would: an encoder
        that connects again after `takeover_after` takes it over and the viewers stay; nobody coming
        back ends it after `publisher_timeout` (the node's timer)."""
        if self.ended:
            return
        self.ended = True
        if lost and self.ready:
            log.info("rtmp publisher %s in %s: %s; the stream waits for it", self.id[:8], self.room, reason)
        else:
            self._on_end(self, reason)
        self._settle()

    def _settle(self) -> None:
        if not self._settled:
            self._settled = True
            self.on_settled()

    # --- going live ---

    def _go_live(self) -> None:
        """At the first video frame that can be forwarded: what the encoder sends is known by then (FFmpeg
        and OBS send both sequence headers first), and a refusal (another codec) comes before anyone was
        told the channel is live."""
        if self.ready or self._avc is None:
            return
        self._video = H264Cutter(VIDEO_PT)
        self._video.parameter_sets = (*self._avc.sps, *self._avc.pps)
        sps = self._avc.sps[0] if self._avc.sps else b""
        profile = sps[1:4].hex() if len(sps) >= 4 else "42e01f"
        self.formats = {"video": MediaFormat("video", "H264", VIDEO_CLOCK, None, {
            "packetization-mode": "1", "level-asymmetry-allowed": "1", "profile-level-id": profile})}
        if self._audio is not None:
            self.formats["audio"] = MediaFormat("audio", "opus", OPUS_CLOCK, 2, {"minptime": "10", "useinbandfec": "1"})
        try:
            self._on_ready(self)  # the node installs this publisher in the room, or raises why not
        except SfuError as exc:
            self.refuse(refusal(exc))
            return
        self.ready = True
        self.connected = True
        self._settle()

    def refuse(self, reason: str) -> None:
        """Tell the encoder why in its log, and end."""
        log.info("rtmp publisher %s in %s refused: %s", self.id[:8], self.room, reason)
        self._stop(reason)
        self.end(reason)

    # --- Publisher, for the node and the room ---

    def bind(self, feeds: dict[str, Feed]) -> None:
        self._feeds = feeds
        for kind, feed in feeds.items():
            cutter = self._video if kind == "video" else self._audio
            assert cutter is not None
            feed.attach(_Keyframes(self) if kind == "video" else self._upstream, cutter.ssrc)
            feed.mapping = self._mappings[kind] = self._time.mapping(kind)
        if self._aac is not None:
            self._aac_mapping = self._aac.mapping()

    def track_mapping(self, kind: str) -> ClockMapping | None:
        return self._mappings.get(kind)

    def _forward(self, kind: str, packets: list[bytes] | tuple[bytes, ...]) -> None:
        feed = self._feeds.get(kind)
        if feed is None or self.closed:
            return
        self.last_packet_at = self._clock()
        self.media_seen = True
        for packet in packets:
            self.octets_in += len(packet)
            feed.on_rtp(packet)

    def _deliver(self, kind: str, codec: str, data: bytes, rtp_timestamp: int, rate: int, keyframe: bool) -> None:
        frame = EncodedFrame(kind, codec, data, rtp_timestamp, rate, keyframe, self._mappings.get(kind), self.id,
                             self.kinds, time.time())
        self._sinks.deliver(self.room, frame)

    def detach(self) -> None:
        self._feeds = {}

    def ending(self, reason: str) -> None:
        self._end_reason = reason

    async def close(self) -> None:
        if not self.ended:
            self.ended = True
            self._stop(f"the server ended the stream: {self._end_reason}" if self._end_reason
                       else "the server ended the stream")
        if self._reencoder is not None:
            await self._reencoder.close()
        await super().close()


class _Keyframes(NoUpstream):
    """A viewer's keyframe request: the re-encode makes one (an RTMP encoder cannot be asked)."""

    def __init__(self, publisher: RtmpPublisher) -> None:
        self._publisher = publisher

    async def request_keyframe(self, media_ssrc: int) -> None:
        reencoder = self._publisher._reencoder
        if reencoder is not None:
            reencoder.request_keyframe()

