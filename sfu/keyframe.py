"""Does this RTP packet start a keyframe? Answered from the bytes alone, for every forwarded packet.

- RTP framing: RFC 3550 section 5.1 (fixed header, CSRCs, padding) and 5.3.1 (header extension).
- H.264, packetization-mode 1: RFC 6184 sections 5.6 (single NAL unit), 5.7.1 (STAP-A), 5.8 (FU-A).
  A packet starts a keyframe when it begins an SPS, or the first slice of an IDR picture. Galène and
  LiveKit count only the SPS; counting the IDR too keeps encoders that do not repeat SPS before every
  IDR usable, at the cost that a subscriber joining between the two packets may start without the SPS
  (its decoder then asks for a keyframe, which the coalesced PLI path serves).
- VP8: RFC 7741 section 4.2 (payload descriptor) and 4.3 (payload header, P bit).
- Opus: every packet is a valid place to start.

Malformed or truncated input gives False (or -1 for the offset); nothing here raises on packet bytes.
"""

from collections.abc import Callable

Buffer = bytes | bytearray | memoryview

_RTP_HEADER_SIZE = 12

_NAL_IDR = 5
_NAL_SPS = 7
_NAL_STAP_A = 24
_NAL_FU_A = 28


def rtp_payload_offset(packet: Buffer) -> int:
    """Offset of the payload in a full RTP packet (after fixed header, CSRCs, header extension).

    -1 if malformed, including a padding count that does not fit.
    """
    length = len(packet)
    if length < _RTP_HEADER_SIZE:
        return -1
    first = packet[0]
    if first >> 6 != 2:
        return -1
    offset = _RTP_HEADER_SIZE + 4 * (first & 0x0F)
    if first & 0x10:
        if offset + 4 > length:
            return -1
        offset += 4 + 4 * ((packet[offset + 2] << 8) | packet[offset + 3])
    if offset > length:
        return -1
    if first & 0x20:
        # The last octet counts the padding, itself included, so 0 is invalid (RFC 3550 5.1).
        padding = packet[length - 1]
        if padding == 0 or offset + padding > length:
            return -1
    return offset


def is_keyframe_start(codec: str, packet: Buffer) -> bool:
    """True when this full RTP packet begins a keyframe.

    codec: "h264", "vp8" or "opus" (case-insensitive); audio is always True. Malformed RTP is False
    for every codec; an unknown codec name is a caller bug and raises ValueError.
    """
    starts = _STARTS.get(codec)
    if starts is None:
        starts = _STARTS.get(codec.lower())
        if starts is None:
            raise ValueError(f"no keyframe detection for codec {codec!r}")
    start = rtp_payload_offset(packet)
    if start < 0:
        return False
    end = len(packet)
    if packet[0] & 0x20:
        end -= packet[end - 1]
    return starts(packet, start, end)


def _h264_starts(packet: Buffer, start: int, end: int) -> bool:
    if start >= end:
        return False
    nal_type = packet[start] & 0x1F
    if nal_type == _NAL_SPS:
        return True
    if nal_type == _NAL_IDR:
        return start + 1 < end and _first_slice(packet[start + 1])
    if nal_type == _NAL_STAP_A:
        pos = start + 1
        while pos + 2 < end:
            size = (packet[pos] << 8) | packet[pos + 1]
            pos += 2
            if size == 0 or pos + size > end:
                return False
            nal_type = packet[pos] & 0x1F
            if nal_type == _NAL_SPS:
                return True
            if nal_type == _NAL_IDR and size > 1 and _first_slice(packet[pos + 1]):
                return True
            pos += size
        return False
    if nal_type == _NAL_FU_A:
        # FU indicator, FU header, then at least one byte of the fragmented NAL unit's body.
        if start + 2 >= end:
            return False
        fu_header = packet[start + 1]
        if not fu_header & 0x80:
            return False
        nal_type = fu_header & 0x1F
        if nal_type == _NAL_SPS:
            return True
        return nal_type == _NAL_IDR and _first_slice(packet[start + 2])
    return False


def _first_slice(slice_header_byte: int) -> bool:
    # An IDR picture may be cut into several slices, each its own NAL unit of type 5 (x264 does so with
    # sliced threads); only the slice with first_mb_in_slice == 0 starts the picture. That field opens
    # the slice header as ue(v), and ue(v) codes 0 as the single bit 1 (H.264 sections 7.3.3, 9.1).
    return bool(slice_header_byte & 0x80)


def _vp8_starts(packet: Buffer, start: int, end: int) -> bool:
    if start >= end:
        return False
    descriptor = packet[start]
    # |X|R|N|S|R|PID(3)|: S=1 and PID=0; the VP8 payload header exists only there (RFC 7741 4.2, 4.3).
    if descriptor & 0x17 != 0x10:
        return False
    pos = start + 1
    if descriptor & 0x80:
        if pos >= end:
            return False
        extension = packet[pos]
        pos += 1
        if extension & 0x80:
            if pos >= end:
                return False
            pos += 2 if packet[pos] & 0x80 else 1
        if extension & 0x40:
            pos += 1
        if extension & 0x30:
            pos += 1
    if pos >= end:
        return False
    return not packet[pos] & 0x01


def _opus_starts(packet: Buffer, start: int, end: int) -> bool:
    return True


_STARTS: dict[str, Callable[[Buffer, int, int], bool]] = {
    # The spellings seen in SDP and in aiortc's codec names, so the hot path needs no str.lower().
    "h264": _h264_starts,
    "H264": _h264_starts,
    "vp8": _vp8_starts,
    "VP8": _vp8_starts,
    "opus": _opus_starts,
    "OPUS": _opus_starts,
    "Opus": _opus_starts,
}


def is_keyframe_frame(codec: str, frame: Buffer) -> bool:
    """Is this re-assembled frame (not an RTP packet) a keyframe? H.264 in Annex B: it holds an IDR
    slice; VP8: the frame tag's P bit is 0 (RFC 6386 section 9.1)."""
    if codec == "VP8":
        return len(frame) > 0 and not frame[0] & 0x01
    if codec != "H264":
        return True
    data = bytes(frame)
    at = data.find(b"\x00\x00\x01")
    while 0 <= at < len(data) - 3:
        if data[at + 3] & 0x1F == _NAL_IDR:
            return True
        at = data.find(b"\x00\x00\x01", at + 3)
    return False
