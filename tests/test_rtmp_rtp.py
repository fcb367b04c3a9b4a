"""RTMP frames to RTP, checked by an independent receiver: FFmpeg publishes H.264 (with B-frames) and
AAC over RTMP to our server; the H.264 is cut into RTP and put back together by aiortc's own
depacketizer, then decoded by PyAV; the AAC becomes Opus RTP that PyAV decodes back into the tone
FFmpeg sent, on a timeline that keeps step with the video's."""

from __future__ import annotations

import asyncio
import shutil
from array import array

import av
import pytest
from aiortc.codecs.h264 import H264PayloadDescriptor
from aiortc.rtp import RtpPacket
from test_rtmp_session import Collected, published_by_ffmpeg

from sfu.rtmp.flv import aac_config, audio_tag, avc_config, nal_units, video_tag
from sfu.rtmp.rtp import OPUS_FRAME, AacToOpus, H264Cutter, RtmpClock

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")

SECONDS = 3.0


@pytest.fixture(scope="module")
def published() -> Collected:
    return asyncio.run(published_by_ffmpeg(SECONDS))


def _sequence_continuous(packets: list[RtpPacket]) -> bool:
    return all((b.sequence_number - a.sequence_number) & 0xFFFF == 1 for a, b in zip(packets, packets[1:]))


def test_h264_is_cut_into_rtp_that_a_webrtc_depacketizer_and_decoder_take_whole(published: Collected) -> None:
    tags = [(ms, video_tag(payload)) for ms, payload in published.video]
    config = avc_config(tags[0][1].data)
    clock = RtmpClock()
    cutter = H264Cutter(payload_type=102)
    cutter.parameter_sets = (*config.sps, *config.pps)
    frames = [(ms, tag) for ms, tag in tags if tag.packet == 1]
    assert all(33 <= b - a <= 34 for (a, _), (b, _) in zip(frames, frames[1:]))  # FFmpeg's 30 fps, as sent
    raw = [packet for ms, tag in frames
           for packet in cutter.frame(nal_units(tag.data, config.length_size), clock.video(ms + tag.composition), tag.keyframe)]

    packets = [RtpPacket.parse(p) for p in raw]
    assert all(len(p) <= 1300 + 12 for p in raw)  # fits a datagram on any path
    assert all(p.payload_type == 102 and p.ssrc == cutter.ssrc for p in packets) and _sequence_continuous(packets)
    decoder = av.CodecContext.create("h264", "r")
    access_units: list[tuple[int, bytes]] = []
    current = b""
    for packet in packets:
        _, data = H264PayloadDescriptor.parse(packet.payload)
        current += data
        if packet.marker:
            access_units.append((packet.timestamp, current))
            current = b""
    assert current == b"" and len(access_units) == len(frames)
    decoded = sum(len(decoder.decode(av.Packet(unit))) for _, unit in access_units) + len(decoder.decode(None))
    assert decoded == len(frames)
    # Every keyframe carries SPS and PPS (RTMP sent them once); presentation times on the 90 kHz clock.
    for (_, tag), (_, unit) in zip(frames, access_units):
        if tag.keyframe:
            assert unit.startswith(b"\x00\x00\x00\x01" + config.sps[0]), unit[:16]
    stamps = [ts for ts, _ in access_units]
    span = (max(stamps) - min(stamps)) / 90_000
    assert abs(span - (frames[-1][0] - frames[0][0]) / 1000) < 0.2 and stamps != sorted(stamps)  # B-frames


def test_aac_becomes_opus_on_the_video_s_timeline_and_sounds_the_same(published: Collected) -> None:
    tags = [(ms, audio_tag(payload)) for ms, payload in published.audio]
    config = aac_config(tags[0][1].data)
    clock = RtmpClock()
    first_video_ms = published.video[1][0]
    video_start = clock.video(first_video_ms)
    opus = AacToOpus(config, bytes(tags[0][1].data), payload_type=111)
    out = [packet for ms, tag in tags[1:] for packet in opus.unit(tag.data, ms, clock)]

    assert opus.errors == 0 and abs(len(out) * 0.02 - SECONDS) < 0.15, len(out)
    packets = [RtpPacket.parse(raw) for raw, _ in out]
    assert _sequence_continuous(packets)
    assert all((b.timestamp - a.timestamp) & 0xFFFFFFFF == OPUS_FRAME for a, b in zip(packets, packets[1:]))
    # One clock for both tracks: the first audio packet sits where its RTMP time says, next to the video.
    assert packets[0].timestamp == clock.audio(tags[1][0])
    video_mapping, audio_mapping = clock.mapping("video"), clock.mapping("audio")
    video_at = video_mapping.ntp_seconds + ((video_start - video_mapping.rtp_timestamp) & 0xFFFFFFFF) / 90_000
    audio_at = audio_mapping.ntp_seconds + ((packets[0].timestamp - audio_mapping.rtp_timestamp) & 0xFFFFFFFF) / 48_000
    assert abs(video_at - audio_at - (first_video_ms - tags[1][0]) / 1000) < 0.001

    decoder = av.CodecContext.create("opus", "r")
    pcm = array("f")
    for packet in packets:
        for frame in decoder.decode(av.Packet(packet.payload)):
            assert frame.format.name == "fltp" and frame.sample_rate == 48_000
            pcm.extend(array("f", bytes(frame.planes[0]))[: frame.samples])
    middle = pcm[len(pcm) // 4: 3 * len(pcm) // 4]
    crossings = sum(1 for a, b in zip(middle, middle[1:]) if (a < 0) != (b < 0))
    peak = crossings / 2 / (len(middle) / 48_000)
    assert abs(peak - 440) < 5, peak  # FFmpeg's sine, through AAC and Opus


def test_a_jump_in_the_aac_s_time_moves_the_opus_timeline_with_it(published: Collected) -> None:
    tags = [(ms, audio_tag(payload)) for ms, payload in published.audio]
    clock = RtmpClock()
    opus = AacToOpus(aac_config(tags[0][1].data), bytes(tags[0][1].data), payload_type=111)
    before = [ts for ms, tag in tags[1:40] for _, ts in opus.unit(tag.data, ms, clock)]
    jumped = [ts for ms, tag in tags[40:80] for _, ts in opus.unit(tag.data, ms + 5000, clock)]
    gap = ((jumped[0] - before[-1]) & 0xFFFFFFFF) / 48_000
    assert 4.9 < gap < 5.2, gap  # the encoder's audio resumed 5 s later: so does the track


def test_the_ingest_rate_counts_the_last_whole_seconds_and_forgets_older_ones() -> None:
    from sfu.rtmp.ingest import IngestRate

    rate = IngestRate(seconds=5)
    assert rate.per_second(99.0) == (0, 0)
    for i in range(300):  # 10 s at 30 frames of 1000 bytes a second
        rate.add(100 + i / 30, 1000, True)
    bits, frames = rate.per_second(110.0)
    assert frames == 30 and bits == 30 * 1000 * 8
    assert rate.per_second(113.0) == (2 * 30 * 1000 * 8 / 5, 2 * 30 / 5)  # seconds 108 and 109 left
    assert rate.per_second(200.0) == (0, 0)  # a silence longer than the window
    rate.add(200.5, 500, False)  # audio: bytes but no frame
    assert rate.per_second(201.0) == (500 * 8 / 5, 0)
    young = IngestRate(seconds=5)
    for i in range(60):  # a stream two seconds old is averaged over those two
        young.add(100 + i / 30, 1000, True)
    assert young.per_second(102.5) == (30 * 1000 * 8, 30)


def test_audio_the_server_cannot_forward_is_named_in_words() -> None:
    from sfu.rtmp.ingest import audio_name

    assert audio_name(2, b"\xff\xfb\x90\x00") == "MP3"
    assert audio_name(9, b"Opus") == "enhanced RTMP 'Opus'"
    assert audio_name(12, b"") == "format 12"
