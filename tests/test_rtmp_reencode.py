"""The re-encode of H.264 with B-frames: FFmpeg's x264 makes a stream with them (in decode order, as an
RTMP encoder sends it); what comes out has none, in presentation order, every picture decodable, with
the source's times, and a keyframe whenever one is asked for."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import av
import pytest

from sfu.rtmp.reencode import WithoutBFrames

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


def b_frame_stream(folder: Path, frames: int = 90) -> list[tuple[bytes, int, int, bool]]:
    """(Annex B, pts ms, dts ms, keyframe) of an x264 stream with 2 B-frames and one keyframe."""
    path = folder / "b.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=30",
                    "-frames:v", str(frames), "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "1000",
                    "-f", "mpegts", str(path)], check=True)
    out = []
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            if packet.size:
                out.append((bytes(packet), int(packet.pts) // 90, int(packet.dts) // 90, bool(packet.is_keyframe)))
    return out


async def _until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_b_frames_come_out_as_a_stream_without_them_in_presentation_order(tmp_path: Path) -> None:
    source = b_frame_stream(tmp_path)
    assert any(pts != dts for _, pts, dts, _ in source)  # B-frames: shown in another order than sent
    got: list[tuple[bytes, int, bool]] = []
    reencoder = WithoutBFrames(lambda data, pts, key: got.append((data, pts, key)), 100, 1000, "test")
    try:
        for data, pts, dts, keyframe in source[:45]:
            reencoder.push(data, pts, dts, keyframe)
            await asyncio.sleep(0.002)
        await _until(lambda: len(got) >= 40)
        asked_at = len(got)
        reencoder.request_keyframe()
        for data, pts, dts, keyframe in source[45:]:
            reencoder.push(data, pts, dts, keyframe)
            await asyncio.sleep(0.002)
        await _until(lambda: len(got) >= len(source) - 3)  # the decoder holds the last two back
    finally:
        await reencoder.close()
    assert reencoder.dropped == 0 and reencoder.errors == 0

    times = [pts for _, pts, _ in got]
    assert times == sorted(times) and times == sorted(pts for _, pts, _, _ in source)[:len(times)]
    keyframes = [i for i, (_, _, key) in enumerate(got) if key]
    assert keyframes[0] == 0  # the source's
    assert any(asked_at <= i <= asked_at + 10 for i in keyframes), (asked_at, keyframes)  # the one asked for
    assert len(keyframes) == 2, keyframes  # and no others (no scene cuts, no x264 default interval)

    decoder = av.CodecContext.create("h264", "r")
    pictures = []
    for data, _, _ in got:
        pictures += decoder.decode(av.Packet(data))  # fed in the order sent: no reordering needed
    assert len(pictures) == len(got)
    assert all(p.pict_type != av.video.frame.PictureType.B for p in pictures)
    assert (pictures[0].width, pictures[0].height) == (320, 240)


async def test_a_stream_joined_between_keyframes_starts_at_the_next_one(tmp_path: Path) -> None:
    source = b_frame_stream(tmp_path, 40)
    got: list[tuple[bytes, int, bool]] = []
    reencoder = WithoutBFrames(lambda data, pts, key: got.append((data, pts, key)), 100, 1000)
    try:
        for data, pts, dts, _ in source[5:]:
            reencoder.push(data, pts, dts, False)
        await asyncio.sleep(0.3)
        assert not got and reencoder.dropped == len(source) - 5 and reencoder.errors == 0
    finally:
        await reencoder.close()


def test_every_x264_setting_of_the_re_encode_is_taken_by_the_encoder() -> None:
    """FFmpeg ignores (and leaves in the dict) options that are not its own: none may be left over."""
    import fractions

    from sfu.rtmp.reencode import x264_options

    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 320, 240, "yuv420p"
    encoder.time_base, encoder.framerate = fractions.Fraction(1, 1000), fractions.Fraction(30)
    encoder.options = x264_options(100, 1000)
    picture = av.VideoFrame(320, 240, "yuv420p")
    picture.pts, picture.time_base = 0, encoder.time_base
    encoder.encode(picture)
    assert dict(encoder.options) == {}

