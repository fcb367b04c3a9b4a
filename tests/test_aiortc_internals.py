"""The SFU's reliance on aiortc/aioice internals fails loudly, not subtly, when they change; RTX bytes."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtcdtlstransport import RTCDtlsTransport

from sfu import aiortc_internals as internals
from sfu import rtx


def test_the_pinned_versions_have_every_private_name_used() -> None:
    internals.check()


def test_a_missing_private_name_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(RTCDtlsTransport, "_handle_rtp_data")
    with pytest.raises(internals.InternalsChanged, match="RTCDtlsTransport._handle_rtp_data is gone"):
        internals.check()


def test_another_aiortc_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internals.aiortc, "__version__", "9.9.9")
    with pytest.raises(internals.InternalsChanged, match="aiortc is 9.9.9"):
        internals.check()


def _packet(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, padding: int = 0) -> bytes:
    first = 0x80 | (0x20 if padding else 0)
    pad = bytes(padding - 1) + bytes([padding]) if padding else b""
    return struct.pack("!BBHII", first, pt, seq, ts, ssrc) + payload + pad


def test_rtx_wraps_and_unwraps_to_the_same_packet() -> None:
    original = _packet(96, 1000, 90_000, 0x1111, b"\x65frame-data")
    wrapped = rtx.wrap(original, 97, 0x2222, 7)
    assert struct.unpack_from("!BBHII", wrapped) == (0x80, 97, 7, 90_000, 0x2222)
    assert wrapped[12:14] == struct.pack("!H", 1000)  # the original sequence number leads the payload
    assert rtx.unwrap(bytes(wrapped), 96, 0x1111) == original


def test_padding_only_rtx_probes_are_dropped() -> None:
    assert rtx.unwrap(_packet(97, 5, 0, 0x2222, b"", padding=200), 96, 0x1111) is None
    assert rtx.unwrap(_packet(97, 5, 0, 0x2222, b"\x03\xe8", padding=4), 96, 0x1111) is None
    assert rtx.unwrap(b"\x80\x61", 96, 0x1111) is None  # truncated
