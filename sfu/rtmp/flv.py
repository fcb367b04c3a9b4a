"""FLV tag bodies as RTMP carries them: H.264 (AVC) video and AAC audio, read without copying.

Video (FLV 10.1, E.4.3.1): a byte of frame type and codec id (7: AVC), the AVC packet type (0: the
AVCDecoderConfigurationRecord with SPS and PPS, 1: frames as length-prefixed NAL units, 2: end of
sequence) and a signed 24-bit composition time offset (presentation minus decode time: non-zero with
B-frames). Audio (E.4.2.1): a byte of sound format (10: AAC), rate, size and type, then the AAC
packet type (0: AudioSpecificConfig, 1: a raw AAC frame). Enhanced RTMP (the 0x80 bit of a video
tag: HEVC, AV1, VP9 by FourCC) is recognised so it can be refused with a clear message.
"""

from __future__ import annotations

from dataclasses import dataclass

AVC = 7
AAC = 10
SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


class FlvError(ValueError):
    """A tag body that is not what it says."""


@dataclass(frozen=True, slots=True)
class VideoTag:
    keyframe: bool
    codec: int  # 7 for AVC; for enhanced RTMP, -1 (see `fourcc`)
    packet: int  # 0 config, 1 frame(s), 2 end of sequence
    composition: int  # milliseconds, presentation minus decode time
    data: memoryview
    fourcc: str = ""  # enhanced RTMP's codec, e.g. "hvc1", "av01"


@dataclass(frozen=True, slots=True)
class AvcConfig:
    profile: int
    level: int
    length_size: int  # bytes before each NAL unit in a frame
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class AudioTag:
    format: int  # 10 for AAC
    packet: int  # for AAC: 0 config, 1 frame
    data: memoryview


@dataclass(frozen=True, slots=True)
class AacConfig:
    object_type: int  # 2: AAC-LC
    sample_rate: int
    channels: int


def video_tag(payload: bytes) -> VideoTag:
    view = memoryview(payload)
    if len(view) < 1:
        raise FlvError("an empty video tag")
    first = view[0]
    if first & 0x80:  # enhanced RTMP: [1 IsExHeader][3 frame type][4 packet type][4 bytes FourCC]
        if len(view) < 5:
            raise FlvError("a short enhanced video tag")
        return VideoTag((first >> 4) & 0x07 == 1, -1, first & 0x0F, 0, view[5:], bytes(view[1:5]).decode("latin-1"))
    codec = first & 0x0F
    if codec != AVC:
        return VideoTag(first >> 4 == 1, codec, -1, 0, view[1:])
    if len(view) < 5:
        raise FlvError("a short AVC video tag")
    composition = (view[2] << 16) | (view[3] << 8) | view[4]
    if composition & 0x800000:
        composition -= 1 << 24
    return VideoTag(first >> 4 == 1, AVC, view[1], composition, view[5:])


def avc_config(data: memoryview | bytes) -> AvcConfig:
    """The AVCDecoderConfigurationRecord (ISO/IEC 14496-15, 5.2.4.1)."""
    view = memoryview(data)
    if len(view) < 7 or view[0] != 1:
        raise FlvError("not an AVCDecoderConfigurationRecord")
    length_size = (view[4] & 0x03) + 1
    if length_size == 3:
        raise FlvError("a NAL unit length of 3 bytes")
    offset = 5
    sets: list[tuple[bytes, ...]] = []
    for count_mask in (0x1F, 0xFF):
        if offset >= len(view):
            raise FlvError("the record ends early")
        count = view[offset] & count_mask
        offset += 1
        found = []
        for _ in range(count):
            if offset + 2 > len(view):
                raise FlvError("the record ends early")
            size = (view[offset] << 8) | view[offset + 1]
            offset += 2
            if offset + size > len(view) or size == 0:
                raise FlvError("a parameter set runs past the record")
            found.append(bytes(view[offset:offset + size]))
            offset += size
        sets.append(tuple(found))
    if not sets[0] or not sets[1]:
        raise FlvError("the record has no SPS or no PPS")
    return AvcConfig(view[1], view[3], length_size, sets[0], sets[1])


def nal_units(data: memoryview | bytes, length_size: int) -> list[memoryview]:
    """The NAL units of a frame (each a view into `data`)."""
    view = memoryview(data)
    units = []
    offset = 0
    while offset < len(view):
        if offset + length_size > len(view):
            raise FlvError("a NAL unit length runs past the frame")
        size = int.from_bytes(view[offset:offset + length_size], "big")
        offset += length_size
        if size == 0 or offset + size > len(view):
            raise FlvError("a NAL unit runs past the frame")
        units.append(view[offset:offset + size])
        offset += size
    return units


def audio_tag(payload: bytes) -> AudioTag:
    view = memoryview(payload)
    if len(view) < 1:
        raise FlvError("an empty audio tag")
    fmt = view[0] >> 4
    if fmt == AAC:
        if len(view) < 2:
            raise FlvError("a short AAC audio tag")
        return AudioTag(fmt, view[1], view[2:])
    return AudioTag(fmt, -1, view[1:])


def aac_config(data: memoryview | bytes) -> AacConfig:
    """The start of an AudioSpecificConfig (ISO/IEC 14496-3, 1.6.2.1)."""
    view = memoryview(data)
    if len(view) < 2:
        raise FlvError("a short AudioSpecificConfig")
    bits = (view[0] << 8) | view[1]
    object_type, index, channels = bits >> 11, (bits >> 7) & 0x0F, (bits >> 3) & 0x0F
    if index >= len(SAMPLE_RATES):
        raise FlvError("an explicit AAC sample rate (not supported)")
    return AacConfig(object_type, SAMPLE_RATES[index], channels)
