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
    read_extensions,
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
    assert set(read_extensions(out)) == {1, 3}


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
    assert read_extensions(later)[3] == abs_send_time(6.0).to_bytes(3, "big")
    assert read_extensions(other.rewrite(wire, now_ntp=6.0))[1] == b"1"
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


@pytest.mark.parametrize(
    ("ids", "mid"),
    [
        ({MID_URI: 15, ABS_SEND_TIME_URI: 3}, "0"),  # an id above 14 (RFC 8285 two-byte form)
        ({MID_URI: 1, ABS_SEND_TIME_URI: 255}, "video0"),
        ({MID_URI: 1, ABS_SEND_TIME_URI: 3}, "f" * 32),  # a mid longer than 16 bytes
        ({MID_URI: 200, ABS_SEND_TIME_URI: 201}, "6a4c1f0e-4cb1-4e0f-9b3a-2f6d1e0c7a55-x"),
    ],
)
def test_ids_above_14_and_long_mids_take_the_two_byte_form(ids: dict[str, int], mid: str) -> None:
    wire = RtpPacket(payload_type=96, sequence_number=9, timestamp=1, ssrc=42, payload=b"\x01abc").serialize(aiortc_map({}))
    out = ExtensionWriter(ids, mid).rewrite(wire, now_ntp=1000.5)
    assert struct.unpack_from("!H", out, 12)[0] == 0x1000
    parsed = RtpPacket.parse(bytes(out), aiortc_map(ids))  # aiortc reads it as a browser would
    assert parsed.extensions.mid == mid
    assert parsed.extensions.abs_send_time == abs_send_time(1000.5)
    assert parsed.payload == b"\x01abc"
    assert read_extensions(out)[ids[MID_URI]] == mid.encode()


def test_the_one_byte_form_is_kept_when_it_fits() -> None:
    wire = RtpPacket(payload_type=96, sequence_number=9, timestamp=1, ssrc=42, payload=b"x").serialize(aiortc_map({}))
    out = ExtensionWriter({MID_URI: 14, ABS_SEND_TIME_URI: 3}, "x" * 16).rewrite(wire, now_ntp=1.0)
    assert struct.unpack_from("!H", out, 12)[0] == 0xBEDE
    assert read_extensions(out)[14] == b"x" * 16


def test_impossible_ids_and_mids_are_refused() -> None:
    with pytest.raises(ValueError):
        ExtensionWriter({MID_URI: 256}, mid="0")
    with pytest.raises(ValueError):
        ExtensionWriter({MID_URI: 1}, mid="x" * 256)


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


async def test_receiver_reports_move_layers_only_for_their_own_stream() -> None:
    """A report about the viewer's audio (its own SSRC) says nothing about its video: only the block
    for the sender's SSRC is loss on that sender's stream."""
    from types import SimpleNamespace

    from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket

    from sfu import aiortc_internals as internals

    async def stock_handler(packet: object) -> None:
        return None

    sender = SimpleNamespace(_ssrc=1111, _handle_rtcp_packet=stock_handler, _RTCRtpSender__rtt=0.03)
    losses: list[float] = []
    rtts: list[float | None] = []
    internals.intercept_feedback(sender, lambda lost: None, lambda: None, rtts.append, losses.append)  # type: ignore[arg-type]

    def block(ssrc: int, fraction: int) -> RtcpReceiverInfo:
        return RtcpReceiverInfo(ssrc=ssrc, fraction_lost=fraction, packets_lost=0, highest_sequence=0, jitter=0, lsr=0, dlsr=0)

    await sender._handle_rtcp_packet(RtcpRrPacket(ssrc=9, reports=[block(2222, 200), block(1111, 5)]))
    assert losses == [5 / 256] and rtts == [0.03]
