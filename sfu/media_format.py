"""What a published track carries, as negotiated in SDP, independent of any one peer's payload types."""

from __future__ import annotations

from dataclasses import dataclass, field

VIDEO_CODECS = ("H264", "VP8")
AUDIO_CODECS = ("opus",)


@dataclass(frozen=True, slots=True)
class MediaFormat:
    kind: str  # "audio" | "video"
    codec: str  # "H264", "VP8", "opus" (aiortc's spelling)
    clock_rate: int
    channels: int | None = None
    parameters: dict[str, str | int] = field(default_factory=dict, hash=False, compare=False)

    @property
    def mime_type(self) -> str:
        return f"{self.kind}/{self.codec}"

    def same_stream_as(self, other: MediaFormat) -> bool:
        """Can subscribers of `other` keep receiving when the publisher switches to this format?"""
        return self.mime_type.lower() == other.mime_type.lower() and self.clock_rate == other.clock_rate


@dataclass(frozen=True, slots=True)
class PayloadMap:
    """How one peer numbers a track: its media payload type, its RTX payload type if any, its mid and
    the ids of the RTP header extensions it negotiated (by URI)."""

    format: MediaFormat
    payload_type: int
    rtx_payload_type: int | None
    mid: str
    extension_ids: dict[str, int] = field(hash=False, compare=False)
