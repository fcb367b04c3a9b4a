"""VP8 to H.264 for a recording: decode once, encode once (never per viewer).

MP4 players everywhere play H.264; a VP8 publisher's video is re-encoded here with libx264 tuned for
live (no lookahead, no B-frames, so each input frame gives its output frame at once, with its time).
Keyframes follow the source's, so the recording seeks where the source could be joined.
"""

from __future__ import annotations

import fractions
from typing import Any

import av

from recorder.mp4 import VIDEO_RATE


class Vp8ToH264:
    def __init__(self, preset: str = "veryfast", crf: int = 23) -> None:
        self._decoder: Any = av.CodecContext.create("vp8", "r")
        self._encoder: Any = None
        self._preset = preset
        self._crf = crf
        self.size: tuple[int, int] | None = None

    def _open(self, width: int, height: int) -> None:
        encoder: Any = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
        encoder.time_base = fractions.Fraction(1, VIDEO_RATE)
        encoder.options = {
            "preset": self._preset,
            "tune": "zerolatency",
            "crf": str(self._crf),
            # x264's own settings (FFmpeg ignores them as options of their own): no B-frames, parameter
            # sets in every keyframe like a WebRTC H.264 stream, keyframes only where the source has them.
            "x264-params": "bframes=0:repeat-headers=1:scenecut=0:keyint=600",
        }
        self._encoder = encoder
        self.size = (width, height)

    def convert(self, data: bytes, pts: int, keyframe: bool) -> list[tuple[bytes, int, bool]]:
        """Encoded H.264 (Annex B) frames for one VP8 frame: (data, pts at 90 kHz, keyframe)."""
        try:
            pictures = self._decoder.decode(av.Packet(data))
        except av.FFmpegError:
            return []  # a damaged frame: the next keyframe recovers
        out = []
        for picture in pictures:
            if self._encoder is None or (picture.width, picture.height) != self.size:
                if self._encoder is not None:
                    out.extend(self._drain())
                self._open(picture.width, picture.height)
            picture = picture.reformat(format="yuv420p") if picture.format.name != "yuv420p" else picture
            picture.pts = pts
            picture.time_base = fractions.Fraction(1, VIDEO_RATE)
            picture.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
            for packet in self._encoder.encode(picture):
                out.append((bytes(packet), int(packet.pts), bool(packet.is_keyframe)))
        return out

    def _drain(self) -> list[tuple[bytes, int, bool]]:
        try:
            return [(bytes(p), int(p.pts), bool(p.is_keyframe)) for p in self._encoder.encode(None)]
        except av.FFmpegError:
            return []

    def close(self) -> list[tuple[bytes, int, bool]]:
        return self._drain() if self._encoder is not None else []
