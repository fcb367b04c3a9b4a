"""Header extensions per subscriber, and sender-report clock mapping."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters

from sfu.header_extensions import (
    ABS_SEND_TIME_URI,
    MID_URI,
    ExtensionWriter,
    abs_send_time,
    read_one_byte_extensions,
    shared_writer,
)
from sfu.sender_reports import ClockMapping, ntp_to_seconds, seconds_to_ntp


def aiortc_map(ids: dict[str, int]) -> HeaderExtensionsMap:
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in ids.items()])
    )
    return extensions


def test_publisher_extensions_are_replaced_by_the_subscribers_own() -> None:
    publisher = {MID_URI: 4, ABS_SEND_TIME_URI: 2}
    packet = RtpPacket(payload_type=96, sequence_number=9, timestamp=1234, ssrc=42, payload=b"\x01payload")
    packet.extensions.mid = "video0"
    packet.extensions.abs_send_time = 0x123456
    wire = packet.serialize(aiortc_map(publisher))

    subscriber = {MID_URI: 1, ABS_SEND_TIME_URI: 3}
    out = ExtensionWriter(subscriber, mid="1").rewrite(wire, now_ntp=1000.5)
    # aiortc, configured like the subscriber's browser, reads what the subscriber negotiated.
    parsed = RtpPacket.parse(bytes(out), aiortc_map(subscriber))
    assert parsed.extensions.mid == "1"
    assert parsed.extensions.abs_send_time == abs_send_time(1000.5)
    assert (parsed.sequence_number, parsed.timestamp, parsed.ssrc, parsed.payload) == (9, 1234, 42, b"\x01payload")
    assert set(read_one_byte_extensions(out)) == {1, 3}


def test_subscribers_with_one_layout_share_a_writer_that_rebuilds_each_packet_once() -> None:
    ids = {MID_URI: 1, ABS_SEND_TIME_URI: 3}
    first, second, other = shared_writer(ids, "0"), shared_writer(dict(ids), "0"), shared_writer(ids, "1")
    assert first is second and other is not first
    wire = RtpPacket(payload_type=96, sequence_number=9, timestamp=1, ssrc=42, payload=b"abc").serialize(aiortc_map({}))
    a, b = first.rewrite(wire, now_ntp=5.0), second.rewrite(wire, now_ntp=5.0)
    assert a == b and a is not b  # each subscriber rewrites its own copy in place
    a[2:4] = b"\xff\xff"
    assert second.rewrite(wire, now_ntp=5.0)[2:4] == b"\x00\x09"
    later = first.rewrite(wire, now_ntp=6.0)  # the same packet sent again later (a NACK): a fresh stamp
    assert read_one_byte_extensions(later)[3] == abs_send_time(6.0).to_bytes(3, "big")
    assert read_one_byte_extensions(other.rewrite(wire, now_ntp=6.0))[1] == b"1"
    changing = bytearray(wire)  # what can change under one identity is rebuilt every time
    assert first.rewrite(changing, now_ntp=7.0)[-3:] == b"abc"
    changing[-3:] = b"xyz"
    assert first.rewrite(changing, now_ntp=7.0)[-3:] == b"xyz"


def test_no_negotiated_extensions_means_no_extension_block() -> None:
    packet = RtpPacket(payload_type=111, sequence_number=1, timestamp=2, ssrc=3, payload=b"opus")
    packet.extensions.mid = "0"
    wire = packet.serialize(aiortc_map({MID_URI: 9}))
    out = ExtensionWriter({}, mid="0").rewrite(wire, now_ntp=0)
    assert out[0] & 0x10 == 0 and bytes(out[12:]) == b"opus" and len(out) == 16


def test_bad_ids_and_mids_are_refused() -> None:
    with pytest.raises(ValueError):
        ExtensionWriter({MID_URI: 15}, mid="0")
    with pytest.raises(ValueError):
        ExtensionWriter({MID_URI: 1}, mid="x" * 17)


def test_sender_report_mapping_carries_the_publishers_clock_forward() -> None:
    ntp = seconds_to_ntp(3_900_000_000.25)
    assert abs(ntp_to_seconds(ntp) - 3_900_000_000.25) < 1e-9
    mapping = ClockMapping(ntp_seconds=ntp_to_seconds(ntp), rtp_timestamp=0xFFFFFF00, clock_rate=90000, received_at=50.0)
    ntp_now, rtp_now = mapping.at(51.5)
    assert ntp_now == pytest.approx(3_900_000_001.75)
    assert rtp_now == (0xFFFFFF00 + 135000) & 0xFFFFFFFF  # wraps
    audio = ClockMapping(ntp_seconds=ntp_to_seconds(ntp), rtp_timestamp=1000, clock_rate=48000, received_at=50.0)
    # Audio and video mapped at the same instant agree on the NTP time: that is what keeps lip sync.
    assert audio.at(51.5)[0] == ntp_now and audio.at(51.5)[1] == 1000 + 72000
    assert struct.pack("!Q", ntp)  # fits 64 bits
