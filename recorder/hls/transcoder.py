"""Decode the source once, encode the ladder, and hand every rendition to its packager.

One decoder per stream, one scaler and one libx264 encoder per encoded rendition (tuned for live:
zerolatency, no B-frames, constrained baseline so WebRTC viewers can take the same packets), and one
AAC encoder whose output is the one audio track every video rendition shares (packaged apart from the
video: an HLS audio group, a DASH audio adaptation set). The source's H.264 is passed through as the top
rendition when the source is H.264, and so is an RTMP encoder's AAC when it is 48 kHz stereo AAC-LC
(other AAC is decoded and resampled for the one encoder, as WebRTC's Opus is).

Segment boundaries are decided here, for all renditions at once (`boundaries.py`: on a fixed grid of
stream time, at a publisher's keyframe asked for just in time when the source is passed through, on
the grid points otherwise). Audio that stops (a muted or paused publisher) is filled with silent AAC
frames once it is half a second behind the video, so the audio track never has a gap players stall
on. Encoded renditions are forced to a keyframe on exactly
those frames, so every segment of every rendition starts with a keyframe at the same instant.
"""

from __future__ import annotations

import fractions
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
from av.audio.resampler import AudioResampler
from av.video.reformatter import VideoReformatter

from recorder.hls.boundaries import SegmentBoundaries
from recorder.hls.cmaf import AUDIO_TIMESCALE, VIDEO_TIMESCALE, AudioTrack
from recorder.hls.ladder import Rendition, RenditionSpec, plan
from recorder.hls.packager import Init, Packager, Part
from recorder.mp4 import decode_keyframe
from sfu.frame_sink import EncodedFrame

log = logging.getLogger(__name__)

AAC_KBPS = 128
AAC_LC_48K_STEREO = bytes([0x11, 0x90])  # AudioSpecificConfig: object type 2, 48 kHz, 2 channels
_I = av.video.frame.PictureType.I
_AUTO = av.video.frame.PictureType.NONE


@dataclass(frozen=True, slots=True)
class LadderOptions:
    segment: float = 2.0
    part: float = 1 / 3
    preset: str = "veryfast"
    threads: int = 1  # of the decoder and of each encoder: a ladder must not take the cores forwarding needs

    @property
    def segment_parts(self) -> int:
        return max(1, round(self.segment / self.part))

    @property
    def part_target(self) -> float:
        return self.segment / self.segment_parts


def x264_options(rendition: Rendition, options: LadderOptions, fps: int = 30) -> dict[str, str]:
    """libx264 settings of an encoded rendition (the benchmark gives ffmpeg the same)."""
    gop = str(round(options.segment * fps))
    return {
        "preset": options.preset,
        "tune": "zerolatency",
        "profile": "baseline",
        "bframes": "0",
        "g": gop,
        "keyint_min": gop,
        "sc_threshold": "0",
        "maxrate": f"{rendition.kbps}k",
        "bufsize": f"{rendition.kbps * 2}k",
        "repeat-headers": "1",
        "forced-idr": "1",
        "threads": str(options.threads),
    }


class _Encoder:
    def __init__(self, rendition: Rendition, options: LadderOptions) -> None:
        self.rendition = rendition
        ctx: Any = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt = rendition.width, rendition.height, "yuv420p"
        ctx.time_base = fractions.Fraction(1, VIDEO_TIMESCALE)
        # The nominal frame rate: zerolatency forces constant frame rate, and without one x264 takes the
        # time base's 90,000 frames a second and gives each frame 1/3000 of its share of the bit rate.
        ctx.framerate = fractions.Fraction(30)
        ctx.bit_rate = rendition.kbps * 1000
        ctx.options = x264_options(rendition, options)
        self.context = ctx
        self.scaler = VideoReformatter()

    def encode(self, picture: Any, pts: int, keyframe: bool) -> list[tuple[bytes, int, bool]]:
        r = self.rendition
        scaled = self.scaler.reformat(picture, width=r.width, height=r.height, format="yuv420p", interpolation="BILINEAR")
        scaled.pts = pts
        scaled.time_base = self.context.time_base
        scaled.pict_type = _I if keyframe else _AUTO
        return [(bytes(p), int(p.pts), bool(p.is_keyframe)) for p in self.context.encode(scaled)]


Output = Init | Part
AAC_FRAME = 1024
AUDIO_BEHIND = AUDIO_TIMESCALE // 2  # audio this far behind the video has stopped: silence fills it


def silent_aac_frame() -> bytes:
    """One AAC-LC frame (48 kHz stereo) of silence, taken from the middle of an encoded run of it."""
    encoder: Any = av.CodecContext.create("aac", "w")
    encoder.sample_rate, encoder.layout, encoder.format = AUDIO_TIMESCALE, "stereo", "fltp"
    encoder.bit_rate = AAC_KBPS * 1000
    encoder.time_base = fractions.Fraction(1, AUDIO_TIMESCALE)
    packets = []
    for i in range(4):
        frame = av.AudioFrame(format="fltp", layout="stereo", samples=AAC_FRAME)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_TIMESCALE, i * AAC_FRAME, encoder.time_base
        packets += [bytes(p) for p in encoder.encode(frame)]
    packets += [bytes(p) for p in encoder.encode(None)]
    return packets[2]
AUDIO = Rendition("audio", 0, 0, AAC_KBPS, passthrough=False)


class LadderTranscoder:
    """Turns a stream's placed frames (in time order per track) into each rendition's parts."""

    def __init__(
        self,
        specs: tuple[RenditionSpec, ...],
        options: LadderOptions,
        emit: Callable[[int, list[Output]], None],
        request_keyframe: Callable[[], None],
        on_encoded: Callable[[Rendition, bytes, int, bool], None] | None = None,
    ) -> None:
        self.specs = specs
        self.options = options
        self._emit = emit
        self._request_keyframe = request_keyframe
        # Every encoded rendition's frames with the source frame's RTP timestamp (server-side simulcast).
        self._on_encoded = on_encoded
        self.renditions: list[Rendition] = []  # the video renditions, highest first
        self.tracks: list[Rendition] = []  # every packaged track: the video renditions, then the audio
        self._packagers: list[Packager] = []  # one per track
        self._audio_index = -1
        self._encoders: list[_Encoder | None] = []
        self._decoder: Any = None
        self._has_video = False
        self._started = False
        self._boundaries: SegmentBoundaries | None = None
        self._broken = False  # a frame failed to decode: wait for the next keyframe
        self._force_key = False
        self._audio_decoder: Any = None  # of the first audio frame's codec
        self._resampler: AudioResampler | None = None  # to 48 kHz stereo, for audio that is not
        self._aac: Any = None
        self._audio_next: int | None = None  # 48 kHz ticks where the audio track's next frame is due
        self._silence = b""  # one AAC frame of silence, for gaps in the audio
        self.silent_frames = 0
        self.late_audio = 0
        self._audio_track: AudioTrack | None = None
        self.codec_errors = 0
        self.frames = 0

    # --- setup ---

    def _start(self, frame: EncodedFrame) -> bool:
        kinds = frame.kinds
        self._has_video = "video" in kinds
        if "audio" in kinds:
            self._audio_track = AudioTrack(AAC_LC_48K_STEREO, bitrate=AAC_KBPS * 1000)
            aac: Any = av.CodecContext.create("aac", "w")
            aac.sample_rate, aac.layout, aac.format = AUDIO_TIMESCALE, "stereo", "fltp"
            aac.bit_rate = AAC_KBPS * 1000
            aac.time_base = fractions.Fraction(1, AUDIO_TIMESCALE)
            self._aac = aac
            self._silence = silent_aac_frame()
        if self._has_video:
            picture = decode_keyframe(frame.codec, frame.data)
            if picture is None:
                return False
            self.renditions = plan(self.specs, frame.codec, picture.width, picture.height)
            self._encoders = [None if r.passthrough else _Encoder(r, self.options) for r in self.renditions]
            self._boundaries = SegmentBoundaries(round(self.options.segment * VIDEO_TIMESCALE), VIDEO_TIMESCALE,
                                                 self.renditions[0].passthrough, self._request_keyframe)
            if any(e is not None for e in self._encoders):
                self._decoder = av.CodecContext.create({"H264": "h264", "VP8": "vp8"}[frame.codec], "r")
                self._decoder.thread_count = self.options.threads
        self._packagers = [Packager(None, self.options.part_target, self.options.segment) for _ in self.renditions]
        if self._audio_track is not None:  # one audio rendition, after the video ones, shared by them all
            self._audio_index = len(self._packagers)
            self._packagers.append(Packager(self._audio_track, self.options.part_target, self.options.segment))
            self.tracks.append(AUDIO)
        self.tracks[:0] = self.renditions
        self._started = True
        return True

    # --- input ---

    def push(self, frame: EncodedFrame, seconds: float) -> None:
        if not self._started:
            # A stream with video starts at its first keyframe (its size sets the ladder).
            if "video" in frame.kinds and not (frame.kind == "video" and frame.keyframe):
                return
            if not self._start(frame):
                return
        if frame.kind == "video":
            self._video(frame, round(seconds * VIDEO_TIMESCALE))
        elif self._aac is not None:
            self._audio(frame, round(seconds * AUDIO_TIMESCALE))

    def part_target(self, index: int) -> float:
        """The longest part of track `index` (audio parts are whole AAC frames)."""
        return self._packagers[index].part_target

    def request_layer_keyframe(self) -> None:
        """A WebRTC viewer switching to an encoded rendition needs a keyframe of it."""
        self._force_key = True

    def _video(self, frame: EncodedFrame, pts: int) -> None:
        self.frames += 1
        assert self._boundaries is not None  # set up with the first video frame
        lag = round(max(0.0, time.time() - frame.received_at) * VIDEO_TIMESCALE) if frame.received_at else 0
        boundary = self._boundaries.video_frame(pts, frame.keyframe, lag)
        slot = self._boundaries.slot if boundary else None
        pictures: list[Any] = []
        if self._decoder is not None and (frame.keyframe or not self._broken):
            try:
                pictures = list(self._decoder.decode(av.Packet(frame.data)))
                self._broken = False
            except av.FFmpegError:
                self._broken = True
                self.codec_errors += 1
                if not frame.keyframe:
                    self._request_keyframe()
        force = boundary or self._force_key
        self._force_key = False
        if self._audio_index >= 0:  # audio that stopped (or never came) is filled with silence
            video_at = pts * AUDIO_TIMESCALE // VIDEO_TIMESCALE
            if self._audio_next is None:
                self._audio_next = video_at  # the audio track starts with the video
            if video_at - self._audio_next > AUDIO_BEHIND:
                self._fill_silence(video_at - AUDIO_BEHIND // 2)
        for index, rendition in enumerate(self.renditions):
            packager = self._packagers[index]
            encoder = self._encoders[index]
            size = (rendition.width, rendition.height)
            if encoder is None:
                self._emit(index, packager.video(frame.data, pts, frame.keyframe, slot, size))
                continue
            for picture in pictures:
                for data, out_pts, key in encoder.encode(picture, pts, force):
                    if self._on_encoded is not None:
                        self._on_encoded(rendition, data, frame.rtp_timestamp, key)
                    self._emit(index, packager.video(data, out_pts, key, slot if key else None, size))

    def _audio(self, frame: EncodedFrame, pts: int) -> None:
        if frame.codec == "aac" and frame.clock_rate == AUDIO_TIMESCALE and frame.config[:2] == AAC_LC_48K_STEREO:
            self._audio_unit(frame.data, pts)  # as it is
            return
        if self._audio_decoder is None:
            self._audio_decoder = av.CodecContext.create("aac" if frame.codec == "aac" else "opus", "r")
            if frame.codec == "aac":
                self._audio_decoder.extradata = frame.config
        try:
            pcm = list(self._audio_decoder.decode(av.Packet(frame.data)))
        except av.FFmpegError:
            self.codec_errors += 1
            return
        if pcm and (pcm[0].sample_rate != AUDIO_TIMESCALE or pcm[0].layout.name != "stereo"):
            self._resampler = self._resampler or AudioResampler(format="fltp", layout="stereo", rate=AUDIO_TIMESCALE)
            for decoded in list(pcm):
                decoded.pts = None
            pcm = [out for decoded in pcm for out in self._resampler.resample(decoded)]
        for chunk in pcm:
            chunk.pts = pts
            chunk.time_base = fractions.Fraction(1, AUDIO_TIMESCALE)
            pts += chunk.samples
            for packet in self._aac.encode(chunk):
                self._audio_out(packet)

    def _audio_out(self, packet: Any) -> None:
        if packet.pts is None or packet.pts < 0:
            return  # the encoder's priming frame
        self._audio_unit(bytes(packet), int(packet.pts))

    def _audio_unit(self, data: bytes, pts: int) -> None:
        """One AAC frame for the audio track, after silence for any gap before it (players stall on
        a gap in either track). A frame that starts before what the track already holds (it came
        after the gap was filled) is dropped."""
        due = self._audio_next
        if due is not None:
            if pts + AAC_FRAME // 2 < due:
                self.late_audio += 1
                return
            if pts - due >= AAC_FRAME // 2:
                self._fill_silence(pts)
                due = self._audio_next if self._audio_next is not None else due
            if abs(pts - due) < AAC_FRAME // 2:
                pts = due  # within half a frame: right after the last one, so the track has no seam
        self._emit(self._audio_index, self._packagers[self._audio_index].audio(data, pts))
        self._audio_next = pts + AAC_FRAME

    def _fill_silence(self, until: int) -> None:
        """Silent frames from where the audio track ends up to `until` (48 kHz ticks)."""
        due = self._audio_next
        assert due is not None
        packager = self._packagers[self._audio_index]
        while due + AAC_FRAME <= until + AAC_FRAME // 2:
            self._emit(self._audio_index, packager.audio(self._silence, due))
            self.silent_frames += 1
            due += AAC_FRAME
        self._audio_next = due

    def finish(self) -> None:
        """The end: flush the encoders and close every rendition's last part."""
        if not self._started:
            return
        if self._aac is not None:
            try:
                for packet in self._aac.encode(None):
                    self._audio_out(packet)
            except av.FFmpegError:
                pass
        for index, packager in enumerate(self._packagers):
            self._emit(index, packager.finish())
