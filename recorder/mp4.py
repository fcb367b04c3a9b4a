"""MP4 files with PyAV: the fragmented spool written while recording, and the faststart copy for playback.

The spool is fragmented MP4 (an empty `moov`, then a `moof`+`mdat` every `fragment` seconds, each
flushed to disk as it is cut), so a process killed at any moment leaves a file that plays up to its
last complete fragment. H.264 arrives in Annex B; the muxer takes its parameter sets from the first
keyframe (`delay_moov`) and stores length-prefixed NAL units. Opus needs an `OpusHead`, written here;
AAC (from RTMP encoders) its AudioSpecificConfig, which comes with its frames. Nothing is decoded or
encoded on this path.
"""

from __future__ import annotations

import dataclasses
import fractions
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

VIDEO_RATE = 90000
AUDIO_RATE = 48000


def opus_head(channels: int = 2, pre_skip: int = 0) -> bytes:
    """The Opus identification header (RFC 7845 section 5.1), as MP4's `dOps` is built from."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, AUDIO_RATE, 0, 0)


@dataclass(frozen=True, slots=True)
class AudioFormat:
    codec: str  # "opus" (WebRTC) or "aac" (RTMP)
    rate: int = AUDIO_RATE
    config: bytes = b""  # AAC's AudioSpecificConfig


OPUS = AudioFormat("opus")


class FragmentedMp4:
    """Writes H.264 video and Opus or AAC audio, timed in seconds, to a fragmented MP4 file."""

    def __init__(self, path: Path, video: tuple[int, int] | None, audio: AudioFormat | None,
                 fragment: float = 1.0) -> None:
        """`video`: the picture size (from the first keyframe), None for audio only."""
        options = {
            "movflags": "empty_moov+default_base_moof+delay_moov",
            "frag_duration": str(int(fragment * 1_000_000)),
            "flush_packets": "1",
        }
        self.path = path
        self._out: Any = av.open(str(path), "w", format="mp4", options=options)
        self.video: Any = None
        self.audio: Any = None
        if video is not None:
            self.video = self._out.add_mux_stream("h264", width=video[0], height=video[1])
            self.video.time_base = fractions.Fraction(1, VIDEO_RATE)
        self._audio_rate = audio.rate if audio is not None else AUDIO_RATE
        if audio is not None:
            aac = audio.codec == "aac"
            layout = "mono" if aac and len(audio.config) >= 2 and (audio.config[1] >> 3) & 0x0F == 1 else "stereo"
            self.audio = self._out.add_stream("aac" if aac else "libopus", rate=audio.rate, layout=layout)
            self.audio.time_base = fractions.Fraction(1, audio.rate)
            ctx = self.audio.codec_context
            ctx.time_base = self.audio.time_base
            ctx.open()  # never fed: opened so the muxer gets its parameters, then given the publisher's
            ctx.extradata = audio.config if aac else opus_head()
        self._last_video: int | None = None

    def write_video(self, data: bytes, seconds: float, keyframe: bool) -> None:
        if self.video is None:
            return
        if self._last_video is None and not keyframe:
            return
        pts = round(seconds * VIDEO_RATE)
        if self._last_video is not None and pts <= self._last_video:
            pts = self._last_video + 1
        self._last_video = pts
        self._mux(self.video, data, pts, keyframe)

    def write_audio(self, data: bytes, seconds: float) -> None:
        if self.audio is not None:
            self._mux(self.audio, data, round(seconds * self._audio_rate), True)

    def _mux(self, stream: Any, data: bytes, pts: int, keyframe: bool) -> None:
        packet = av.Packet(data)
        packet.pts = packet.dts = pts
        packet.time_base = stream.time_base
        packet.stream = stream
        packet.is_keyframe = keyframe
        self._out.mux(packet)

    def close(self) -> None:
        try:
            self._out.close()
        except (av.FFmpegError, ValueError):
            pass  # nothing was written (no keyframe ever came): the file stays empty


def decode_keyframe(codec: str, keyframe: bytes) -> Any:
    """The picture of one keyframe (H.264 or VP8), decoded on its own; None if it does not decode."""
    decoder: Any = av.CodecContext.create({"H264": "h264", "VP8": "vp8"}[codec], "r")
    try:
        pictures = [*decoder.decode(av.Packet(keyframe)), *decoder.decode(None)]
    except av.FFmpegError:
        return None
    return pictures[0] if pictures else None


def picture_size(codec: str, keyframe: bytes) -> tuple[int, int] | None:
    """Width and height of a keyframe, by decoding it (once per recording)."""
    picture = decode_keyframe(codec, keyframe)
    return None if picture is None else (picture.width, picture.height)


@dataclass(frozen=True, slots=True)
class MediaInfo:
    duration: float
    video_codec: str
    audio_codec: str
    width: int
    height: int


def finalize(spool: Path, target: Path) -> MediaInfo:
    """Remux `spool` (complete or cut short by a crash) into a faststart MP4 at `target`.

    Reads every complete fragment (a torn last one ends the input), copies packets without decoding,
    and writes the index first so a browser can start and seek before it has the whole file.
    """
    source: Any = av.open(str(spool), "r")
    try:
        out: Any = av.open(str(target), "w", format="mp4", options={"movflags": "+faststart"})
        try:
            streams = {}
            for stream in source.streams:
                if stream.type in ("video", "audio"):
                    streams[stream.index] = out.add_stream_from_template(stream)
            try:
                for packet in source.demux(*[s for s in source.streams if s.index in streams]):
                    if packet.dts is None or packet.size == 0:
                        continue
                    packet.stream = streams[packet.stream.index]
                    out.mux(packet)
            except av.FFmpegError:
                pass  # a torn fragment at the end of a crashed spool: everything before it is kept
            video = next((s for s in source.streams if s.type == "video"), None)
            audio = next((s for s in source.streams if s.type == "audio"), None)
            info = MediaInfo(
                duration=0.0,  # read back from the finished file below
                video_codec=video.codec_context.name if video is not None else "",
                audio_codec=audio.codec_context.name if audio is not None else "",
                width=video.codec_context.width if video is not None else 0,
                height=video.codec_context.height if video is not None else 0,
            )
        finally:
            out.close()
    finally:
        source.close()
    return dataclasses.replace(info, duration=duration(target))


def duration(path: Path) -> float:
    """Seconds, as a player (and ffprobe) sees the file."""
    container: Any = av.open(str(path), "r")
    try:
        return 0.0 if container.duration is None else container.duration / av.time_base
    finally:
        container.close()


def thumbnail(path: Path, at: float = 1.0, width: int = 320) -> bytes | None:
    """A JPEG of the first picture at or after `at` seconds (or the first picture), `width` wide."""
    try:
        container: Any = av.open(str(path), "r")
    except av.FFmpegError:
        return None
    try:
        video = next((s for s in container.streams if s.type == "video"), None)
        if video is None:
            return None
        picture = None
        for frame in container.decode(video):
            picture = frame
            if frame.time is not None and frame.time >= at:
                break
        return None if picture is None else jpeg(picture, width)
    except av.FFmpegError:
        return None
    finally:
        container.close()


def jpeg(picture: Any, width: int = 320) -> bytes:
    height = max(2, round(picture.height * width / max(1, picture.width) / 2) * 2)
    encoder: Any = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuvj420p"
    encoder.time_base = fractions.Fraction(1, 25)
    frame = picture.reformat(width=width, height=height, format="yuvj420p")
    return b"".join(bytes(p) for p in [*encoder.encode(frame), *encoder.encode(None)])
