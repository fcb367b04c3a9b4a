"""Media encoded once, for test and load-test peers that publish without a browser."""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import Any

import av
from aiortc import MediaStreamTrack

VIDEO_RATE = 90000


def encode_video(codec: str = "h264", frames: int = 90, width: int = 640, height: int = 360, fps: int = 30,
                 bitrate: int = 1_000_000, gop: int = 30) -> list[bytes]:
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
    for i in range(frames):
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane, value in zip(frame.planes, (40 + (i * 3) % 180, 128, 128)):
            plane.update(bytes([value]) * (plane.line_size * plane.height))
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

    def __init__(self, frames: list[bytes], fps: int = 30) -> None:
        super().__init__()
        self._frames = frames
        self._fps = fps
        self._index = 0
        self._start: float | None = None

    async def recv(self) -> Any:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._index / self._fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        packet = av.Packet(self._frames[self._index % len(self._frames)])
        packet.pts = self._index * (VIDEO_RATE // self._fps)
        packet.time_base = fractions.Fraction(1, VIDEO_RATE)
        self._index += 1
        return packet
