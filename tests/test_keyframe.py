"""sfu.keyframe on real streams: libx264, libvpx and libopus output packetized by aiortc's own
packetizers and wrapped in RTP with header extensions as aiortc writes them; then edge cases,
truncated packets and garbage."""

import fractions
import functools
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass

import av
import pytest
from aiortc.codecs.h264 import H264Encoder, H264PayloadDescriptor
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder, VpxPayloadDescriptor
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from av.video.codeccontext import VideoCodecContext

from sfu.keyframe import is_keyframe_start, rtp_payload_offset

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
WIDTH, HEIGHT = 320, 240
FRAME_COUNT = 12
NOISY_KEYFRAME = 10  # keyint 10 makes it an IDR; libvpx is told to make it a keyframe too


@dataclass(frozen=True)
class EncodedFrame:
    keyframe: bool
    payloads: tuple[bytes, ...]  # as aiortc's packetizer made them
    packets: tuple[bytes, ...]  # the same payloads in full RTP packets


def _extensions_map() -> HeaderExtensionsMap:
    extensions_map = HeaderExtensionsMap()
    extensions_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=4, uri=MID_URI),
                RTCRtpHeaderExtensionParameters(id=2, uri=ABS_SEND_TIME_URI),
            ]
        )
    )
    return extensions_map


def _rtp(
    payload: bytes,
    *,
    sequence_number: int = 1,
    extensions: bool = True,
    csrc: int = 0,
    padding: int = 0,
) -> bytes:
    packet = RtpPacket(payload_type=96, sequence_number=sequence_number, timestamp=90_000, ssrc=0x1234)
    packet.payload = payload
    packet.csrc = list(range(1, csrc + 1))
    packet.padding_size = padding
    if extensions:
        packet.extensions.mid = "0"
        packet.extensions.abs_send_time = 0x123456
    return packet.serialize(_extensions_map())


def _picture(index: int, noisy: bool, forced_keyframe: bool) -> av.VideoFrame:
    frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
    for number, plane in enumerate(frame.planes):
        row = bytes((x + index * 8) % 256 for x in range(plane.line_size))
        data = bytearray(row * plane.height)
        if noisy and number == 0:
            # Noise in the top rows makes a keyframe of about 15 KB: many FU-A packets.
            band = plane.line_size * 40
            data[:band] = random.Random(index).randbytes(band)
        plane.update(bytes(data))
    frame.pts = index
    frame.time_base = fractions.Fraction(1, 30)
    if forced_keyframe:
        frame.pict_type = av.video.frame.PictureType.I
    return frame


def _frames(
    codec: av.CodecContext,
    packetize: Callable[[bytes, int], list[bytes]],
    forced_keyframes: Collection[int] = (0,),
) -> tuple[EncodedFrame, ...]:
    assert isinstance(codec, VideoCodecContext)
    codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    codec.time_base = fractions.Fraction(1, 30)
    codec.framerate = fractions.Fraction(30)
    frames = []
    sequence_number = 0
    for index in range(FRAME_COUNT):
        picture = _picture(index, index == NOISY_KEYFRAME, index in forced_keyframes)
        for encoded in codec.encode(picture):
            payloads = packetize(bytes(encoded), index)
            packets = []
            for payload in payloads:
                sequence_number += 1
                packets.append(_rtp(payload, sequence_number=sequence_number))
            frames.append(EncodedFrame(encoded.is_keyframe, tuple(payloads), tuple(packets)))
    return tuple(frames)


@functools.cache
def h264_frames(slices: int) -> tuple[EncodedFrame, ...]:
    codec = av.CodecContext.create("libx264", "w")
    codec.profile = "Baseline"
    codec.options = {
        "tune": "zerolatency",
        "preset": "ultrafast",
        # threads=1 so the slice count does not depend on the machine's cores.
        "x264-params": f"keyint=10:min-keyint=10:scenecut=0:threads=1:slices={slices}",
    }
    return _frames(codec, lambda data, index: H264Encoder._packetize(H264Encoder._split_bitstream(data)))


@functools.cache
def vp8_frames() -> tuple[EncodedFrame, ...]:
    codec = av.CodecContext.create("libvpx", "w")
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    return _frames(
        codec,
        lambda data, index: Vp8Encoder._packetize(data, 1000 + index),
        forced_keyframes=(0, 6, NOISY_KEYFRAME),
    )


def _nal_units(payload: bytes) -> list[bytes]:
    """The NAL units (or their first fragments) that begin in this payload, per aiortc's depacketizer."""
    _, annex_b = H264PayloadDescriptor.parse(payload)
    return list(H264Encoder._split_bitstream(annex_b))


def _nal_types_begun(payload: bytes) -> list[int]:
    return [nal[0] & 0x1F for nal in _nal_units(payload)]


def _starts(codec: str, frame: EncodedFrame) -> list[int]:
    return [i for i, packet in enumerate(frame.packets) if is_keyframe_start(codec, packet)]


@pytest.mark.parametrize("slices", [1, 3])
def test_h264_stream_from_libx264(slices: int) -> None:
    frames = h264_frames(slices)
    assert len(frames) == FRAME_COUNT
    assert [i for i, frame in enumerate(frames) if frame.keyframe] == [0, NOISY_KEYFRAME]
    for frame in frames:
        if not frame.keyframe:
            assert _starts("h264", frame) == []
            continue
        begun = [_nal_types_begun(payload) for payload in frame.payloads]
        assert 7 in begun[0], "x264 opens every IDR access unit with its SPS"
        first_idr = next(i for i, types in enumerate(begun) if 5 in types)
        # The first packet announces the keyframe; when aiortc could not fit the first IDR slice in the
        # STAP-A with SPS/PPS, the packet that begins that slice is a start as well. Nothing else is.
        assert _starts("h264", frame) == sorted({0, first_idr})
        if slices > 1:
            assert sum(types.count(5) for types in begun) == slices

    big = frames[NOISY_KEYFRAME]
    assert sum(map(len, big.payloads)) > 3000
    fu_a = [i for i, payload in enumerate(big.payloads) if payload[0] & 0x1F == 28]
    assert len(fu_a) > 3
    assert [i for i in fu_a if is_keyframe_start("h264", big.packets[i])] == [fu_a[0]]


def test_vp8_stream_from_libvpx() -> None:
    frames = vp8_frames()
    assert [i for i, frame in enumerate(frames) if frame.keyframe] == [0, 6, NOISY_KEYFRAME]
    for frame in frames:
        assert _starts("vp8", frame) == ([0] if frame.keyframe else [])
        descriptor, data = VpxPayloadDescriptor.parse(frame.payloads[0])
        assert descriptor.partition_start == 1 and descriptor.partition_id == 0
        assert (data[3:6] == b"\x9d\x01\x2a") == frame.keyframe  # the keyframe start code, RFC 6386 9.1
    assert len(frames[NOISY_KEYFRAME].packets) > 3


def _sps_pps_sei_idr() -> tuple[bytes, bytes, bytes, bytes]:
    first = h264_frames(1)[0]
    nals = {nal[0] & 0x1F: nal for payload in first.payloads for nal in _nal_units(payload)}
    return nals[7], nals[8], nals[6], nals[5]


def test_stap_a_built_from_sps_and_pps() -> None:
    sps, pps, sei, idr = _sps_pps_sei_idr()
    [stap_a] = H264Encoder._packetize([sps, pps])
    assert stap_a[0] & 0x1F == 24
    assert is_keyframe_start("h264", _rtp(stap_a))
    [pps_sei] = H264Encoder._packetize([pps, sei])
    assert pps_sei[0] & 0x1F == 24
    assert not is_keyframe_start("h264", _rtp(pps_sei))
    [pps_idr] = H264Encoder._packetize([pps, idr[:200]])
    assert is_keyframe_start("h264", _rtp(pps_idr))


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (bytes([0x67, 0x42, 0xC0, 0x1E]), True),  # SPS
        (bytes([0x65, 0x88, 0x84]), True),  # IDR, first_mb_in_slice = 0
        (bytes([0x65, 0x40, 0x84]), False),  # IDR, a later slice of the picture
        (bytes([0x65]), False),  # IDR without a slice header
        (bytes([0x7C, 0x87, 0x42]), True),  # FU-A start of an SPS
        (bytes([0x7C, 0x85, 0x88]), True),  # FU-A start of an IDR's first slice
        (bytes([0x7C, 0x85, 0x40]), False),  # FU-A start of an IDR's later slice
        (bytes([0x7C, 0x05, 0x88]), False),  # FU-A middle
        (bytes([0x7C, 0x45, 0x88]), False),  # FU-A end
        (bytes([0x7C, 0x85]), False),  # FU-A with no body
        (bytes([0x78, 0x00, 0x00, 0x00, 0x02, 0x67, 0x42]), False),  # STAP-A with a zero size
        (bytes([0x78, 0x00, 0x02, 0x68, 0xCE, 0x00, 0x02, 0x67, 0x42]), True),  # STAP-A of PPS, SPS
        (bytes([0x78, 0x00, 0x09, 0x67]), False),  # STAP-A size past the end
        (bytes([0x78, 0x00]), False),  # STAP-A with half a size
        *((bytes([0x60 | t, 0x88, 0x84]), False) for t in (0, 1, 6, 8, 9, 25, 26, 27, 29, 30, 31)),
    ],
)
def test_h264_payloads(payload: bytes, expected: bool) -> None:
    assert is_keyframe_start("h264", _rtp(payload)) is expected


def _vp8_keyframe_data() -> bytes:
    return VpxPayloadDescriptor.parse(vp8_frames()[0].payloads[0])[1]


@pytest.mark.parametrize(
    ("descriptor", "expected"),
    [
        (VpxPayloadDescriptor(partition_start=1, partition_id=0), True),
        (VpxPayloadDescriptor(partition_start=1, partition_id=0, picture_id=17), True),
        (VpxPayloadDescriptor(partition_start=1, partition_id=0, tl0picidx=3), True),
        (VpxPayloadDescriptor(1, 0, picture_id=300, tl0picidx=3, tid=(1, 1)), True),
        (VpxPayloadDescriptor(partition_start=1, partition_id=0, picture_id=5, keyidx=7), True),
        (VpxPayloadDescriptor(partition_start=1, partition_id=0, tid=(0, 0), keyidx=0), True),
        (VpxPayloadDescriptor(partition_start=0, partition_id=0, picture_id=17), False),
        (VpxPayloadDescriptor(partition_start=1, partition_id=1, picture_id=17), False),
        (VpxPayloadDescriptor(partition_start=0, partition_id=2), False),
    ],
)
def test_vp8_descriptors(descriptor: VpxPayloadDescriptor, expected: bool) -> None:
    data = _vp8_keyframe_data()
    assert is_keyframe_start("vp8", _rtp(bytes(descriptor) + data)) is expected
    delta = bytes([data[0] | 0x01]) + data[1:]
    assert not is_keyframe_start("vp8", _rtp(bytes(descriptor) + delta))


def test_vp8_seven_bit_picture_id() -> None:
    data = _vp8_keyframe_data()
    # aiortc always writes the 15-bit form; browsers may send the 7-bit one (M=0).
    assert is_keyframe_start("vp8", _rtp(bytes([0x90, 0x80, 0x05]) + data))
    assert is_keyframe_start("vp8", _rtp(bytes([0x90, 0x80, 0x05, 0x00, 0x01])))
    assert not is_keyframe_start("vp8", _rtp(bytes([0x90, 0x80, 0x05, 0x01, 0x00])))
    assert not is_keyframe_start("vp8", _rtp(bytes([0x90, 0x80, 0x05])))
    assert not is_keyframe_start("vp8", _rtp(bytes([0x90, 0x80, 0x85, 0x01])))


@pytest.mark.parametrize("extensions", [True, False])
@pytest.mark.parametrize("csrc", [0, 1, 15])
@pytest.mark.parametrize("padding", [0, 1, 13])
def test_rtp_framing(extensions: bool, csrc: int, padding: int) -> None:
    payload = h264_frames(1)[0].payloads[0]
    packet = _rtp(payload, extensions=extensions, csrc=csrc, padding=padding)
    assert bool(packet[0] & 0x10) is extensions
    parsed = RtpPacket.parse(packet, _extensions_map())
    assert parsed.payload == payload
    assert parsed.extensions.mid == ("0" if extensions else None)
    assert rtp_payload_offset(packet) == len(packet) - padding - len(payload)
    assert is_keyframe_start("h264", packet)
    vp8 = _rtp(vp8_frames()[0].payloads[0], extensions=extensions, csrc=csrc, padding=padding)
    assert is_keyframe_start("vp8", vp8)


def test_padding_is_not_payload() -> None:
    header = bytes([0xA0]) + _rtp(b"", extensions=False)[1:]
    # The padding octets would read as an SPS / a VP8 keyframe header if taken for payload.
    assert not is_keyframe_start("h264", header + b"\x67\x42\x00\x04")
    assert is_keyframe_start("h264", header + b"\x67\x42\x00\x01")
    assert not is_keyframe_start("vp8", header + b"\x10\x00\x00\x04")
    assert is_keyframe_start("vp8", header + b"\x10\x00\x00\x01")
    assert rtp_payload_offset(header + b"\x00\x00\x03") == 12


def _malformed() -> list[bytes]:
    good = _rtp(h264_frames(1)[0].payloads[0])
    bare = _rtp(b"\x67\x42", extensions=False)
    return [
        *(bytes([good[0] & 0x3F | version << 6]) + good[1:] for version in (0, 1, 3)),
        good[:11],
        b"",
        bytes([0x8F]) + bare[1:12] + b"\x00" * 20,  # 15 CSRCs announced, 5 present
        bytes([0x90]) + bare[1:12] + b"\xbe\xde",  # extension header cut short
        bytes([0x90]) + bare[1:12] + b"\xbe\xde\x00\x09" + b"\x00" * 8,  # extension past the end
        bytes([0xA0]) + bare[1:] + b"\x00",  # padding count 0
        bytes([0xA0]) + bare[1:] + b"\x09",  # more padding than payload
    ]


def test_malformed_rtp() -> None:
    for packet in _malformed():
        assert rtp_payload_offset(packet) == -1
        for codec in ("h264", "vp8", "opus"):
            assert is_keyframe_start(codec, packet) is False


def _samples() -> list[tuple[str, bytes]]:
    samples = []
    for codec, frames in (("h264", h264_frames(1)), ("h264", h264_frames(3)), ("vp8", vp8_frames())):
        for frame in (frames[0], frames[1], frames[NOISY_KEYFRAME]):
            samples += [(codec, packet) for packet in frame.packets[:3]]
            samples.append((codec, _rtp(frame.payloads[0], csrc=2, padding=5)))
    return samples


def test_truncated_packets_never_raise() -> None:
    for codec, packet in _samples():
        for length in range(len(packet) + 1):
            for cut in (packet[:length], bytearray(packet[:length]), memoryview(packet)[:length]):
                assert -1 <= rtp_payload_offset(cut) <= length
                assert isinstance(is_keyframe_start(codec, cut), bool)


def test_random_garbage_never_raises() -> None:
    rng = random.Random(20240611)
    samples = _samples()
    for _ in range(20_000):
        data = bytearray(rng.randbytes(rng.randrange(0, 80)))
        if data and rng.random() < 0.8:
            data[0] = 0x80 | (data[0] & 0x3F)  # version 2, so parsing gets past the first check
        for codec in ("h264", "vp8", "opus"):
            assert isinstance(is_keyframe_start(codec, data), bool)
    for _ in range(20_000):
        codec, packet = rng.choice(samples)
        mutated = bytearray(packet[: rng.randrange(len(packet) + 1)])
        for _ in range(rng.randrange(1, 4)):
            if mutated:
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        assert isinstance(is_keyframe_start(codec, bytes(mutated)), bool)
        assert -1 <= rtp_payload_offset(mutated) <= len(mutated)


def test_opus_is_always_a_start() -> None:
    encoder = OpusEncoder()
    rng = random.Random(7)
    payloads: list[bytes] = []
    for index in range(5):
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        frame.sample_rate = 48_000
        frame.pts = index * 960
        frame.time_base = fractions.Fraction(1, 48_000)
        for plane in frame.planes:
            plane.update(rng.randbytes(plane.buffer_size))
        payloads += encoder.encode(frame)[0]
    assert payloads
    for payload in [*payloads, b"", b"\x00"]:
        assert is_keyframe_start("opus", _rtp(payload))


def test_codec_names() -> None:
    packet = h264_frames(1)[0].packets[0]
    for codec in ("h264", "H264"):
        assert is_keyframe_start(codec, packet)
    vp8 = vp8_frames()[0].packets[0]
    for codec in ("vp8", "VP8", "Vp8"):
        assert is_keyframe_start(codec, vp8)
    for codec in ("opus", "OPUS", "Opus", "oPuS"):
        assert is_keyframe_start(codec, vp8)
    with pytest.raises(ValueError):
        is_keyframe_start("vp9", vp8)


def test_memoryview_into_a_larger_buffer() -> None:
    packet = h264_frames(1)[NOISY_KEYFRAME].packets[1]
    buffer = bytearray(b"\xff" * 7 + packet + b"\x00" * 9)
    view = memoryview(buffer)[7 : 7 + len(packet)]
    assert rtp_payload_offset(view) == rtp_payload_offset(packet)
    assert is_keyframe_start("h264", view)  # the first FU-A of the IDR
