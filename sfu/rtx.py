"""RTX retransmission packets (RFC 4588 section 4), at the byte level.

An RTX packet carries a lost packet on its own SSRC and payload type, with its own sequence numbers;
the payload opens with the original sequence number (OSN). Publishers also send padding-only RTX
packets to probe bandwidth: those repair nothing and are dropped.
"""

from __future__ import annotations

import struct

from sfu.keyframe import rtp_payload_offset

_SEQ_TS_SSRC = struct.Struct("!HII")


def unwrap(packet: bytes, payload_type: int, ssrc: int) -> bytes | None:
    """The original packet inside an RTX packet, with the media `payload_type` and `ssrc`; None for
    padding-only or malformed packets."""
    start = rtp_payload_offset(packet)
    if start < 0:
        return None
    end = len(packet) - (packet[-1] if packet[0] & 0x20 else 0)
    if end - start < 3:  # the OSN and at least one byte of payload
        return None
    out = bytearray(packet[:start])
    out[0] &= 0xDF  # the padding, if any, is not carried over
    out[1] = (out[1] & 0x80) | payload_type
    out[2:4] = packet[start : start + 2]
    struct.pack_into("!I", out, 8, ssrc)
    out += packet[start + 2 : end]
    return bytes(out)


def wrap(packet: bytes | bytearray, payload_type: int, ssrc: int, sequence_number: int) -> bytearray:
    """`packet` (already in the subscriber's numbering) as an RTX packet on the repair stream."""
    start = rtp_payload_offset(packet)
    out = bytearray(packet[:start])
    out[1] = (out[1] & 0x80) | payload_type
    osn = packet[2:4]
    _SEQ_TS_SSRC.pack_into(out, 2, sequence_number & 0xFFFF, _SEQ_TS_SSRC.unpack_from(packet, 2)[1], ssrc)
    out += osn
    out += packet[start:]
    return out
