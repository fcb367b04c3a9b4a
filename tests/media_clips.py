"""Media encoded once, for test and load-test peers that publish without a browser."""

from __future__ import annotations

import asyncio
import fractions
import os
import struct
import time
from typing import Any

import av
from aiortc import MediaStreamTrack

VIDEO_RATE = 90000


def encode_video(codec: str = "h264", frames: int = 90, width: int = 640, height: int = 360, fps: int = 30,
                 bitrate: int = 1_000_000, gop: int = 30, noise: bool = False) -> list[bytes]:
    """`frames` frames of a moving test pattern, encoded once (keyframe every `gop`)."""
    name = {"h264": "libx264", "vp8": "libvpx"}[codec]
    ctx: Any = av.CodecContext.create(name, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.bit_rate = bitrate
    ctx.time_base = fractions.Fraction(1, fps)
    ctx.framerate = fractions.Fraction(fps, 1)
    ctx.gop_size = gop
    if codec == "h264":
        ctx.profile = "Baseline"
        ctx.options = {"tune": "zerolatency", "preset": "ultrafast", "keyint": str(gop), "min-keyint": str(gop),
                       "scenecut": "0", "repeat-headers": "1"}
    else:
        ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    out: list[bytes] = []
    block_w, block_h = width // 3, height // 3
    for i in range(frames):
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane, value in zip(frame.planes, (40 + (i * 3) % 180, 128, 128)):
            plane.update(bytes([value]) * (plane.line_size * plane.height))
        if noise:  # a moving block of noise keeps the encoder near its target bitrate
            luma = bytearray(bytes(frame.planes[0]))
            stride = frame.planes[0].line_size
            x0, y0 = (i * 7) % (width - block_w), (i * 5) % (height - block_h)
            for row in range(block_h):
                start = (y0 + row) * stride + x0
                luma[start : start + block_w] = os.urandom(block_w)
            frame.planes[0].update(bytes(luma))
        frame.pts = i
        frame.time_base = ctx.time_base
        if i % gop == 0:
            frame.pict_type = av.video.frame.PictureType.I
        out.extend(bytes(p) for p in ctx.encode(frame))
    out.extend(bytes(p) for p in ctx.encode(None))
    return out


class EncodedVideoTrack(MediaStreamTrack):
    """Plays pre-encoded frames in a loop at `fps`; aiortc only packetises them (no encoder runs)."""

    kind = "video"

    def __init__(self, frames: list[bytes], fps: int = 30, gop: int = 0) -> None:
        super().__init__()
        self._frames = frames
        self._fps = fps
        self._gop = gop
        self._index = 0  # frames sent: the clock
        self._position = 0  # where in the clip
        self._start: float | None = None

    def request_keyframe(self) -> None:
        """Answer a PLI as an encoder would: the next frame sent is the clip's next keyframe."""
        if self._gop:
            self._position = -(-self._position // self._gop) * self._gop

    async def recv(self) -> Any:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._index / self._fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        packet = av.Packet(self._frames[self._position % len(self._frames)])
        self._position += 1
        packet.pts = self._index * (VIDEO_RATE // self._fps)
        packet.time_base = fractions.Fraction(1, VIDEO_RATE)
        self._index += 1
        return packet


AUDIO_RATE = 48000


def encode_audio(seconds: float = 2.0, frequency: float = 440.0) -> list[bytes]:
    """Opus packets of 20 ms, a sine tone, encoded once."""
    import math

    ctx: Any = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = AUDIO_RATE
    ctx.layout = "stereo"
    ctx.format = "s16"
    ctx.bit_rate = 64000
    ctx.time_base = fractions.Fraction(1, AUDIO_RATE)
    samples = 960
    out: list[bytes] = []
    for i in range(int(seconds * 50)):
        frame = av.AudioFrame(format="s16", layout="stereo", samples=samples)
        pcm = bytearray()
        for n in range(samples):
            value = int(8000 * math.sin(2 * math.pi * frequency * (i * samples + n) / AUDIO_RATE))
            pcm += value.to_bytes(2, "little", signed=True) * 2
        frame.planes[0].update(bytes(pcm))
        frame.sample_rate = AUDIO_RATE
        frame.pts = i * samples
        frame.time_base = ctx.time_base
        out.extend(bytes(p) for p in ctx.encode(frame))
    return out


class EncodedAudioTrack(MediaStreamTrack):
    """Plays pre-encoded 20 ms Opus packets in a loop, in real time."""

    kind = "audio"

    def __init__(self, packets: list[bytes]) -> None:
        super().__init__()
        self._packets = packets
        self._index = 0
        self._start: float | None = None

    async def recv(self) -> Any:
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._index * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        packet = av.Packet(self._packets[self._index % len(self._packets)])
        packet.pts = self._index * 960
        packet.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._index += 1
        return packet


def encode_aac(seconds: float, rate: int, layout: str) -> tuple[bytes, list[bytes]]:
    """(AudioSpecificConfig, AAC-LC access units of 1024 samples) of a sine tone, as an RTMP encoder sends."""
    import math

    ctx: Any = av.CodecContext.create("aac", "w")
    ctx.sample_rate, ctx.layout, ctx.format, ctx.bit_rate = rate, layout, "fltp", 128_000
    ctx.time_base = fractions.Fraction(1, rate)
    channels = 1 if layout == "mono" else 2
    out: list[bytes] = []
    for i in range(int(seconds * rate / 1024)):
        frame = av.AudioFrame(format="fltp", layout=layout, samples=1024)
        tone = struct.pack(f"<{1024}f", *(0.2 * math.sin(2 * math.pi * 440 * (i * 1024 + n) / rate) for n in range(1024)))
        for plane in range(channels):
            frame.planes[plane].update(tone)
        frame.sample_rate, frame.pts, frame.time_base = rate, i * 1024, ctx.time_base
        out.extend(bytes(p) for p in ctx.encode(frame))
    return bytes(ctx.extradata), out
