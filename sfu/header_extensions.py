"""Per-subscriber RTP header extensions (RFC 8285).

Publisher and subscriber negotiate their own extension ids, so forwarded packets get a new extension
block: the subscriber's `mid` (RFC 8843) and a fresh abs-send-time stamped at send time; extensions the
subscriber did not negotiate (or that describe the publisher's link, like transport-cc) are dropped.
The block uses the one-byte form (ids 1-14, values up to 16 bytes) when it can and the two-byte form
(RFC 8285 section 4.3: ids up to 255, values up to 255 bytes) when the subscriber negotiated an id
above 14 or a mid longer than 16 bytes.
"""

from __future__ import annotations

import struct

ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE = 0x1000
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def abs_send_time(ntp_seconds: float) -> int:
    """24-bit 6.18 fixed-point seconds, the abs-send-time wire value."""
    return int(ntp_seconds * (1 << 18)) & 0xFFFFFF


class ExtensionWriter:
    """Builds RTP packets with one subscriber's extension block in place of the publisher's.

    Subscribers that negotiated the same ids and mid share one writer (`shared_writer`), and a writer
    remembers its last result: a packet fanned out to many such subscribers is rebuilt once, then copied.
    """

    __slots__ = ("_mid_id", "_ast_id", "_mid", "_profile", "_mid_element", "_ast_header", "_last")

    def __init__(self, ids: dict[str, int], mid: str) -> None:
        self._mid_id = ids.get(MID_URI, 0)
        self._ast_id = ids.get(ABS_SEND_TIME_URI, 0)
        self._mid = mid.encode()
        if self._mid_id and not 1 <= len(self._mid) <= 255:
            raise ValueError("a mid is 1 to 255 bytes in an RTP header extension")
        for ext_id in (self._mid_id, self._ast_id):
            if ext_id and not 1 <= ext_id <= 255:
                raise ValueError("RTP header extension ids are 1 to 255")
        one_byte = all(i <= 14 for i in (self._mid_id, self._ast_id)) and len(self._mid) <= 16
        self._profile = ONE_BYTE_PROFILE if one_byte else TWO_BYTE_PROFILE
        # Each element's header: one byte (id, length - 1) or two (id, length).
        if one_byte:
            self._mid_element = bytes([(self._mid_id << 4) | (len(self._mid) - 1)]) + self._mid
            self._ast_header = bytes([(self._ast_id << 4) | 2])
        else:
            self._mid_element = bytes([self._mid_id, len(self._mid)]) + self._mid
            self._ast_header = bytes([self._ast_id, 3])
        # (packet, now_ntp, result) of the last rewrite, as one tuple so it is replaced whole; the packet
        # is held, so no other packet can take its identity.
        self._last: tuple[bytes | None, float, bytes] = (None, 0.0, b"")

    @property
    def layout(self) -> tuple[int, int, bytes]:
        return self._mid_id, self._ast_id, self._mid

    def rewrite(self, packet: bytes | bytearray, now_ntp: float) -> bytearray:
        """`packet` with its extension block replaced; padding, CSRCs and payload unchanged."""
        last_in, last_ntp, last_out = self._last
        if packet is last_in and now_ntp == last_ntp:
            return bytearray(last_out)
        first = packet[0]
        csrc_end = 12 + 4 * (first & 0x0F)
        payload_start = csrc_end
        if first & 0x10:
            (words,) = struct.unpack_from("!H", packet, csrc_end + 2)
            payload_start = csrc_end + 4 + 4 * words
        block = bytearray()
        if self._mid_id:
            block += self._mid_element
        if self._ast_id:
            block += self._ast_header
            block += abs_send_time(now_ntp).to_bytes(3, "big")
        out = bytearray(packet[:csrc_end])
        if block:
            block += bytes(-len(block) % 4)  # pad to 32-bit words
            out[0] = first | 0x10
            out += struct.pack("!HH", self._profile, len(block) // 4)
            out += block
        else:
            out[0] = first & ~0x10 & 0xFF
        out += packet[payload_start:]
        if type(packet) is bytes:  # what can change under the same identity is not remembered
            self._last = (packet, now_ntp, bytes(out))
        return out


_SHARED: dict[tuple[int, int, bytes], ExtensionWriter] = {}
MAX_SHARED = 1024  # distinct layouts kept; a node sees a handful (ids and mids repeat across viewers)


def shared_writer(ids: dict[str, int], mid: str) -> ExtensionWriter:
    """The writer for this layout, shared by every subscriber that negotiated it (one event loop)."""
    writer = ExtensionWriter(ids, mid)
    shared = _SHARED.get(writer.layout)
    if shared is None:
        if len(_SHARED) >= MAX_SHARED:
            _SHARED.clear()
        shared = _SHARED[writer.layout] = writer
    return shared


def read_extensions(packet: bytes | bytearray) -> dict[int, bytes]:
    """The header extensions of a packet, one- or two-byte form, by id (for tests and diagnostics,
    not the packet path)."""
    first = packet[0]
    start = 12 + 4 * (first & 0x0F)
    if not first & 0x10:
        return {}
    profile, words = struct.unpack_from("!HH", packet, start)
    data, out, i = packet[start + 4 : start + 4 + 4 * words], {}, 0
    two_byte = profile & 0xFFF0 == TWO_BYTE_PROFILE
    if profile != ONE_BYTE_PROFILE and not two_byte:
        return {}
    while i < len(data):
        if data[i] == 0:
            i += 1
            continue
        if two_byte:
            ext_id, length, header = data[i], data[i + 1], 2
        else:
            ext_id, length, header = data[i] >> 4, (data[i] & 0x0F) + 1, 1
            if ext_id == 15:
                break
        out[ext_id] = bytes(data[i + header : i + header + length])
        i += header + length
    return out
