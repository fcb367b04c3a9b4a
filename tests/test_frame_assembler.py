"""sfu.frame_assembler on a real libx264 stream packetised as aiortc's sender cuts it: frames come out
whole and in order through reordering, duplicates and repaired loss; a loss that is not repaired skips
to the next keyframe, asks for one and counts the time; what comes out always decodes without error."""

from __future__ import annotations

import random
import struct
from typing import Any

import av
import av.logging
import pytest

from media_clips import encode_video
from sfu import aiortc_internals as internals
from sfu.frame_assembler import FrameAssembler
from support import FakeClock

GOP = 10
FRAME_TICKS = 3000  # 90 kHz / 30 fps


def packetise(frames: list[bytes], first_seq: int = 65500) -> list[list[bytes]]:
    """RTP packets per frame (marker on each frame's last), sequence numbers wrapping past 65535."""
    out, seq = [], first_seq
    for index, frame in enumerate(frames):
        payloads = internals.h264_payloads(frame)
        packets = []
        for i, payload in enumerate(payloads):
            marker = 0x80 if i == len(payloads) - 1 else 0
            packets.append(struct.pack("!BBHII", 0x80, marker | 96, seq & 0xFFFF, 1000 + index * FRAME_TICKS, 7) + payload)
            seq += 1
        out.append(packets)
    return out


@pytest.fixture(scope="module")
def clip() -> list[bytes]:
    """The access units with 4-byte start codes, as depacketising writes them (x264 also uses 3-byte ones)."""
    return [b"".join(b"\x00\x00\x00\x01" + nal for nal in _nal_units(frame))
            for frame in encode_video("h264", frames=40, width=320, height=240, gop=GOP, noise=True)]


def _nal_units(frame: bytes) -> list[bytes]:
    return [nal.lstrip(b"\x00") for nal in frame.split(b"\x00\x00\x01") if nal.strip(b"\x00")]


class Sink:
    def __init__(self) -> None:
        self.frames: list[tuple[bytes, int]] = []
        self.keyframe_requests = 0

    def on_frame(self, data: bytes, timestamp: int) -> None:
        self.frames.append((data, timestamp))

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1


def assembler(sink: Sink, clock: FakeClock, codec: str = "H264", kind: str = "video") -> FrameAssembler:
    return FrameAssembler(codec, kind, 90000, sink.on_frame, sink.request_keyframe, clock, max_wait=0.5)


def decode_errors(frames: list[bytes]) -> tuple[int, list[str]]:
    """(pictures decoded, FFmpeg's error messages) for these frames fed to a fresh decoder in order."""
    decoder: Any = av.CodecContext.create("h264", "r")
    pictures = 0
    with av.logging.Capture() as logs:
        for data in frames:
            try:
                pictures += len(decoder.decode(av.Packet(data)))
            except av.FFmpegError as exc:
                logs.append((av.logging.ERROR, "decode", str(exc)))
    return pictures, [message for level, _, message in logs if level <= av.logging.ERROR]


def test_in_order_packets_give_back_each_access_unit(clip: list[bytes]) -> None:
    sink, clock = Sink(), FakeClock()
    frames = assembler(sink, clock)
    for packets in packetise(clip):
        for packet in packets:
            frames.push(packet)
    assert [data for data, _ in sink.frames] == clip
    assert [ts for _, ts in sink.frames] == [1000 + i * FRAME_TICKS for i in range(len(clip))]
    assert decode_errors([data for data, _ in sink.frames]) == (len(clip), [])
    assert frames.gaps == frames.skipped_frames == sink.keyframe_requests == 0


def test_reordering_and_duplicates_change_nothing(clip: list[bytes]) -> None:
    sink, clock = Sink(), FakeClock()
    frames = assembler(sink, clock)
    packets = [p for frame in packetise(clip) for p in frame]
    rng = random.Random(7)
    shuffled = []
    for start in range(0, len(packets), 6):  # each packet moved by up to five places, some sent twice
        window = packets[start : start + 6]
        rng.shuffle(window)
        shuffled += window + ([window[0]] if rng.random() < 0.3 else [])
    for packet in shuffled:
        frames.push(packet)
    assert [data for data, _ in sink.frames] == clip


def test_a_loss_repaired_in_time_loses_nothing(clip: list[bytes]) -> None:
    sink, clock = Sink(), FakeClock()
    frames = assembler(sink, clock)
    packets = [p for frame in packetise(clip) for p in frame]
    lost = packets.pop(40)
    for packet in packets[:60]:
        frames.push(packet)
        frames.tick()
    clock.advance(0.3)  # the retransmission comes within max_wait
    frames.tick()
    frames.push(lost)
    for packet in packets[60:]:
        frames.push(packet)
    assert [data for data, _ in sink.frames] == clip
    assert frames.gaps == 0


def test_a_loss_never_repaired_skips_to_the_next_keyframe_and_asks_for_one(clip: list[bytes]) -> None:
    sink, clock = Sink(), FakeClock()
    frames = assembler(sink, clock)
    by_frame = packetise(clip)
    broken = 3  # a P-frame: frames 3..9 depend on it, frame 10 is the next keyframe
    assert len(by_frame[broken]) > 1
    for index, packets in enumerate(by_frame):
        for i, packet in enumerate(packets):
            if (index, i) == (broken, 1):
                continue  # lost for good
            frames.push(packet)
        if index == 6:
            clock.advance(0.6)
            frames.tick()  # waited long enough: give up
    out = [data for data, _ in sink.frames]
    assert out == clip[:broken] + clip[GOP:]  # nothing from the broken frame to the next keyframe
    assert decode_errors(out) == (len(out), [])
    assert frames.gaps == 1 and frames.skipped_frames >= 4
    assert frames.skipped_seconds == pytest.approx((GOP - (broken - 1)) * FRAME_TICKS / 90000)
    assert sink.keyframe_requests == 1  # none was held yet: asked for


def test_a_keyframe_that_takes_long_to_arrive_whole_is_not_given_up_on(clip: list[bytes]) -> None:
    """A publisher pacing a large keyframe at a low bitrate: its packets come over 1.5 s, in order and
    none lost. Waiting is for holes, not for slow frames: it comes out whole, with its parameter sets."""
    sink, clock = Sink(), FakeClock()
    frames = assembler(sink, clock)
    by_frame = packetise(clip)
    keyframe = by_frame[0]
    assert len(keyframe) > 3
    for packet in keyframe:
        frames.push(packet)
        clock.advance(1.5 / len(keyframe))
        frames.tick()
    for packets in by_frame[1:]:
        for packet in packets:
            frames.push(packet)
    assert [data for data, _ in sink.frames] == clip and frames.gaps == 0


def test_a_loss_inside_a_keyframe_resumes_at_the_next_keyframe_not_inside_the_broken_one(clip: list[bytes]) -> None:
    sink, clock = Sink(), FakeClock()
    frames = assembler(sink, clock)
    by_frame = packetise(clip)
    for index, packets in enumerate(by_frame):
        for i, packet in enumerate(packets):
            if (index, i) != (GOP, 2):  # the second keyframe loses a packet in its middle, for good
                frames.push(packet)
        clock.advance(1 / 30)
        frames.tick()
    out = [data for data, _ in sink.frames]
    assert out == clip[:GOP] + clip[2 * GOP :]  # its group is skipped; the next keyframe starts whole
    assert decode_errors(out)[1] == [] and frames.gaps == 1


def test_a_stray_ancient_packet_changes_nothing_and_a_restarted_numbering_starts_afresh(clip: list[bytes]) -> None:
    sink, clock = Sink(), FakeClock()
    frames = assembler(sink, clock)
    by_frame = packetise(clip, first_seq=10_000)
    for packets in by_frame[:5]:
        for packet in packets:
            frames.push(packet)
    frames.push(by_frame[0][0][:2] + struct.pack("!H", 10_000 - 5000) + by_frame[0][0][4:])  # one very late
    for packets in by_frame[5:GOP]:
        for packet in packets:
            frames.push(packet)
    assert [data for data, _ in sink.frames] == clip[:GOP]  # the stray one was dropped, nothing else lost
    renumbered = packetise(clip, first_seq=200)  # the sender starts its numbering again
    for packets in renumbered[GOP:]:
        for packet in packets:
            frames.push(packet)
    assert sink.keyframe_requests == 1  # asked for at once: the restart came mid-group
    assert [data for data, _ in sink.frames][GOP:] == clip[2 * GOP :]


def test_a_frame_that_lost_its_last_packet_and_marker_is_not_handed_on(clip: list[bytes]) -> None:
    sink, clock = Sink(), FakeClock()
    frames = assembler(sink, clock)
    by_frame = packetise(clip)
    for index, packets in enumerate(by_frame[:GOP + 2]):
        for packet in packets[:-1] if index == 2 else packets:
            frames.push(packet)
    clock.advance(1.0)
    frames.tick()
    out = [data for data, _ in sink.frames]
    assert out == clip[:2] + clip[GOP : GOP + 2]
    assert decode_errors(out)[1] == []


def test_joining_mid_stream_starts_at_a_keyframe_even_when_its_parameter_sets_come_late(clip: list[bytes]) -> None:
    sink, clock = Sink(), FakeClock()
    frames = assembler(sink, clock)
    by_frame = packetise(clip)
    for packets in by_frame[4:GOP]:  # the middle of a group of pictures: nothing decodable yet
        for packet in packets:
            frames.push(packet)
    assert sink.frames == []
    keyframe = by_frame[GOP]
    for packet in [*keyframe[1:], keyframe[0]]:  # the first packet (parameter sets) arrives last
        frames.push(packet)
    for packets in by_frame[GOP + 1 :]:
        for packet in packets:
            frames.push(packet)
    out = [data for data, _ in sink.frames]
    assert out == clip[GOP:]
    assert decode_errors(out) == (len(out), [])


def test_padding_between_frames_is_no_frame(clip: list[bytes]) -> None:
    """Chromium probes bandwidth with padding-only packets on the media SSRC, numbered in between frames
    and stamped with the last frame's timestamp: they must not come out as empty frames at that time."""
    sink, clock = Sink(), FakeClock()
    frames = assembler(sink, clock)
    seq = 1000
    for index, packets in enumerate(packetise(clip[:GOP])):
        for packet in packets:
            frames.push(packet[:2] + struct.pack("!H", seq) + packet[4:])
            seq += 1
        for _ in range(index % 3):  # 0-2 padding packets after each frame: 255 bytes of padding, no payload
            frames.push(struct.pack("!BBHII", 0xA0, 96, seq, 1000 + index * FRAME_TICKS, 7) + bytes(254) + b"\xff")
            seq += 1
    assert [data for data, _ in sink.frames] == clip[:GOP]
    assert len({ts for _, ts in sink.frames}) == GOP


def test_reset_waits_for_a_keyframe(clip: list[bytes]) -> None:
    sink, clock = Sink(), FakeClock()
    frames = assembler(sink, clock)
    by_frame = packetise(clip)
    for packets in by_frame[:3]:
        for packet in packets:
            frames.push(packet)
    frames.reset()
    for packets in by_frame[3:]:
        for packet in packets:
            frames.push(packet)
    assert [data for data, _ in sink.frames] == clip[:3] + clip[GOP:]


def test_audio_frames_go_at_once_in_order_and_late_ones_are_dropped() -> None:
    sink, clock = Sink(), FakeClock()
    frames = assembler(sink, clock, codec="opus", kind="audio")
    packets = [struct.pack("!BBHII", 0x80, 111, seq, seq * 960, 9) + bytes([seq % 256]) * 20 for seq in range(10)]
    for packet in [packets[0], packets[1], packets[3], packets[2], packets[5], packets[4]]:
        frames.push(packet)
    assert [ts // 960 for _, ts in sink.frames] == [0, 1, 3, 5]
    assert sink.frames[0][0] == bytes(20)


def test_garbage_never_raises_and_a_stream_after_it_comes_through(clip: list[bytes]) -> None:
    sink, clock = Sink(), FakeClock()
    frames = assembler(sink, clock)
    rng = random.Random(3)
    for _ in range(3000):
        frames.push(rng.randbytes(rng.randrange(0, 60)))
        if rng.random() < 0.01:
            clock.advance(1.0)
            frames.tick()
    sink.frames.clear()
    for packets in packetise(clip, first_seq=rng.randrange(65536)):  # whatever the numbering was
        for packet in packets:
            frames.push(packet)
            frames.tick()
        clock.advance(0.2)
    out = [data for data, _ in sink.frames]
    assert out[-GOP:] == clip[-GOP:]
    assert decode_errors(out[-2 * GOP :])[1] == []
