"""H.264 with B-frames, decoded and encoded again without them: once per stream, for every audience.

Chromium's WebRTC receiver does not play B-frames. Measured with a B-frame stream from FFmpeg passed
through unchanged (`-bf 2`, x264): of 424 frames received, 15 were decoded (the keyframes), whether
the RTP timestamps carried presentation or decode times; the same stream without B-frames: 261 of 261,
in order. So an encoder that sends them (OBS's x264 default) has its video re-encoded here with
libx264 tuned for live: no B-frames, no lookahead, the source's keyframes kept, more on request (a
viewer who joins gets a picture at once, which RTMP itself cannot ask the encoder for).

Decoding and encoding run on a worker thread, never on the event loop; PyAV lets go of the GIL inside
the codecs. The queue to it is bounded: a thread that falls behind drops frames up to the source's
next keyframe (a picture that cannot be decoded is never sent on).
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import av

log = logging.getLogger(__name__)

MAX_QUEUE = 60  # frames (2 s at 30 fps) waiting for the thread
MS = fractions.Fraction(1, 1000)
_I = av.video.frame.PictureType.I
_AUTO = av.video.frame.PictureType.NONE
PROFILES = {66: "baseline", 77: "main", 88: "main", 100: "high"}

# (H.264 Annex B, presentation time in ms, keyframe), called on the event loop
Output = Callable[[bytes, int, bool], None]


def x264_options(profile_idc: int, kbps: int) -> dict[str, str]:
    """libx264 for a live re-encode: every input frame out at once, keyframes where we force them."""
    ceiling = str(max(300, kbps))
    return {
        "preset": "veryfast",
        "tune": "zerolatency",
        "profile": PROFILES.get(profile_idc, "high"),  # as the source's, which the viewers' SDP names
        "crf": "23",
        "maxrate": f"{ceiling}k",
        "bufsize": f"{ceiling}k",  # a second of it: no keyframe spike a viewer's link cannot take
        # x264's own settings (FFmpeg ignores them as options of their own): no B-frames; parameter sets in
        # every keyframe, as a WebRTC H.264 stream has them; keyframes only where the source has them or a
        # viewer asks, never at a scene cut or every 250 frames.
        "x264-params": "bframes=0:repeat-headers=1:scenecut=0:keyint=1200",
        "threads": "1",
    }


class WithoutBFrames:
    def __init__(self, on_output: Output, profile_idc: int, kbps: int, name: str = "",
                 on_failed: Callable[[str], None] | None = None) -> None:
        self._on_output = on_output
        self._on_failed = on_failed  # called on the event loop if the thread stops on an error
        self._options = x264_options(profile_idc, kbps)
        self._loop = asyncio.get_running_loop()
        self._queue: queue.Queue[tuple[bytes, int, int, bool] | None] = queue.Queue(MAX_QUEUE)
        self._keyframe_wanted = threading.Event()
        self._waiting_for_keyframe = True  # the decoder starts at one, and restarts at one after a drop
        self._thread = threading.Thread(target=self._work, name=f"rtmp-reencode-{name}", daemon=True)
        self._thread.start()
        self.dropped = 0  # frames the thread had no time for
        self.errors = 0  # frames the decoder could not read
        self.frames_out = 0

    # --- the event loop ---

    def push(self, annex_b: bytes, pts_ms: int, dts_ms: int, keyframe: bool) -> None:
        """One source frame in decode order (Annex B, parameter sets in front of keyframes)."""
        if self._waiting_for_keyframe:
            if not keyframe:
                self.dropped += 1
                return
            self._waiting_for_keyframe = False
        try:
            self._queue.put_nowait((annex_b, pts_ms, dts_ms, keyframe))
        except queue.Full:
            self.dropped += 1
            self._waiting_for_keyframe = True
            if self.dropped == 1 or self.dropped % 300 == 0:
                log.warning("%s: the re-encode falls behind; %d frames dropped", self._thread.name, self.dropped)

    def request_keyframe(self) -> None:
        self._keyframe_wanted.set()

    async def close(self) -> None:
        """Stop the thread (frames still queued are let go)."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        await asyncio.to_thread(self._queue.put, None)
        await asyncio.to_thread(self._thread.join)

    # --- the worker thread ---

    def _work(self) -> None:
        decoder: Any = av.CodecContext.create("h264", "r")
        decoder.thread_count = 1  # frame threads would hold frames back, one per thread
        encoder: Any = None
        try:
            while (item := self._queue.get()) is not None:
                annex_b, pts_ms, dts_ms, keyframe = item
                packet = av.Packet(annex_b)
                packet.pts, packet.dts, packet.time_base = pts_ms, dts_ms, MS
                try:
                    pictures = decoder.decode(packet)
                except av.FFmpegError:
                    self.errors += 1
                    continue
                for picture in pictures:
                    if encoder is None or (picture.width, picture.height) != (encoder.width, encoder.height):
                        if encoder is not None:
                            self._emit(encoder, None)
                        encoder = self._open(picture.width, picture.height)
                    if picture.format.name != "yuv420p":
                        picture = picture.reformat(format="yuv420p")
                    wanted = self._keyframe_wanted.is_set()
                    if wanted:
                        self._keyframe_wanted.clear()
                    picture.pict_type = _I if (picture.key_frame or wanted) else _AUTO
                    picture.time_base = MS
                    self._emit(encoder, picture)
        except Exception as exc:
            log.exception("%s failed; the stream's video stops here", self._thread.name)
            if self._on_failed is not None:
                try:
                    self._loop.call_soon_threadsafe(self._on_failed, f"{type(exc).__name__}: {exc}"[:200])
                except RuntimeError:
                    pass  # the loop is gone

    def _open(self, width: int, height: int) -> Any:
        encoder: Any = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
        encoder.time_base = MS
        encoder.framerate = fractions.Fraction(30)
        encoder.options = self._options
        return encoder

    def _emit(self, encoder: Any, picture: Any) -> None:
        for packet in encoder.encode(picture):
            self.frames_out += 1
            try:
                self._loop.call_soon_threadsafe(self._on_output, bytes(packet), int(packet.pts), bool(packet.is_keyframe))
            except RuntimeError:  # the loop is gone (a shutdown cut short): nobody is left to show it to
                return
