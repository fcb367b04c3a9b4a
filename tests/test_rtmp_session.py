"""The RTMP server with FFmpeg as the encoder (a real RTMP client): it publishes H.264 + AAC; the server
takes the handshake and the commands, and hands on metadata, the AVC and AAC sequence headers and the
frames in order; a refused key is told to FFmpeg in words it logs; hostile bytes, a stalled
handshake, a silent encoder, a 1 GB chunk size with a message to match, unreadable AMF and too many
connections from one address close only their own connections, and leave no task behind."""

from __future__ import annotations

import asyncio
import shutil
import struct
import time
from typing import Any

import pytest

from sfu.rtmp.flv import AAC, AVC, FlvError, aac_config, audio_tag, avc_config, nal_units, video_tag
from sfu.rtmp.chunks import ACKNOWLEDGEMENT, COMMAND_AMF0, SET_CHUNK_SIZE, VIDEO
from sfu.rtmp.session import HANDSHAKE, Limits, Publisher, Refused, RtmpServer
from test_rtmp_chunks import header0

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


class Collected:
    def __init__(self) -> None:
        self.metadata: dict[str, Any] = {}
        self.audio: list[tuple[int, bytes]] = []
        self.video: list[tuple[int, bytes]] = []
        self.ended = ""

    def started(self, stop: Any) -> None:
        return None

    def on_metadata(self, values: dict[str, Any]) -> None:
        self.metadata = values

    def on_audio(self, timestamp: int, payload: bytes) -> None:
        self.audio.append((timestamp, payload))

    def on_video(self, timestamp: int, payload: bytes) -> None:
        self.video.append((timestamp, payload))

    def end(self, reason: str, lost: bool = False) -> None:
        self.ended = reason


async def ffmpeg(url: str, seconds: float = 3.0, bframes: int = 2, audio_rate: int = 44_100) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-loglevel", "info", "-re", "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30",
        "-bf", str(bframes), "-c:a", "aac", "-ar", str(audio_rate), "-f", "flv", url, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:  # cancelled or timed out: the encoder stops with the test
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode or 0, err.decode(errors="replace")


async def published_by_ffmpeg(seconds: float = 3.0) -> Collected:
    """What FFmpeg publishes (H.264 with B-frames, AAC) to a server that takes any key."""
    got = Collected()

    async def authorize(app: str, key: str, address: str) -> Publisher:
        return got

    server = RtmpServer(authorize)
    port = await server.start("127.0.0.1", 0)
    try:
        code, log = await ffmpeg(f"rtmp://127.0.0.1:{port}/live/key", seconds)
        assert code == 0, log[-2000:]
    finally:
        await server.close()
    return got


async def test_ffmpeg_publishes_h264_and_aac_and_everything_arrives_in_order() -> None:
    published: list[tuple[str, str, Collected]] = []

    async def authorize(app: str, key: str, address: str) -> Publisher:
        if key != "tlsk_good":
            raise Refused("this stream key is not valid: copy it again from the studio")
        collected = Collected()
        published.append((app, key, collected))
        return collected

    server = RtmpServer(authorize)
    port = await server.start("127.0.0.1", 0)
    try:
        code, log = await ffmpeg(f"rtmp://127.0.0.1:{port}/live/tlsk_good")
        assert code == 0, log[-2000:]
        (app, key, got), = published
        assert app == "live" and key == "tlsk_good"
        assert got.metadata.get("width") == 320.0 and got.metadata.get("height") == 240.0
        # FLV video tags: frame type and codec id 7 (AVC); packet type 0 is the sequence header (SPS/PPS).
        assert got.video[0][1][0] == 0x17 and got.video[0][1][1] == 0, got.video[0][1][:8].hex()
        assert got.audio[0][1][0] >> 4 == 10 and got.audio[0][1][1] == 0  # AAC, its AudioSpecificConfig first
        frames = [v for v in got.video if v[1][1] == 1]
        assert 80 <= len(frames) <= 91, len(frames)  # 3 s at 30 fps
        assert sum(1 for v in frames if v[1][0] >> 4 == 1) >= 3  # a keyframe a second
        times = [t for t, _ in got.video]
        assert times == sorted(times) and times[-1] >= 2800  # decode order, as sent
        assert len(got.audio) > 100  # 1024-sample AAC frames at 44.1 kHz
        await asyncio.sleep(0.2)
        assert got.ended  # FCUnpublish / deleteStream / the close ended it

        code, log = await ffmpeg(f"rtmp://127.0.0.1:{port}/live/tlsk_wrong", seconds=1)
        assert code != 0 and "copy it again from the studio" in log, log[-2000:]
        assert len(published) == 1
    finally:
        await server.close()


async def test_hostile_bytes_close_their_own_connection_only() -> None:
    async def authorize(app: str, key: str, address: str) -> Publisher:
        return Collected()

    server = RtmpServer(authorize)
    port = await server.start("127.0.0.1", 0)
    try:
        # A wrong version byte, then a handshake followed by garbage chunks: both are closed.
        for payload in (b"\x06" + bytes(1536), b"\x03" + bytes(1536) + bytes(1536) + b"\xc9garbage"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(payload)
            await writer.drain()
            rest = await asyncio.wait_for(reader.read(), timeout=5)  # until the server closes it
            assert len(rest) in (0, 1 + 2 * 1536)
            writer.close()
        await asyncio.sleep(0.1)
        assert not server.connections
        code, log = await ffmpeg(f"rtmp://127.0.0.1:{port}/live/anything", seconds=1)
        assert code == 0, log[-2000:]
    finally:
        await server.close()


async def test_the_published_h264_and_aac_decode_from_what_the_flv_reader_takes_out() -> None:
    """What step 2 builds on: SPS/PPS from the AVC config, NAL units from each frame, composition
    offsets (FFmpeg was asked for B-frames), the AAC config; PyAV decodes every frame and AAC packet."""
    import av

    got = await published_by_ffmpeg()
    tags = [video_tag(payload) for _, payload in got.video]
    assert tags[0].codec == AVC and tags[0].packet == 0
    config = avc_config(tags[0].data)
    assert config.length_size == 4 and config.sps[0][0] & 0x1F == 7 and config.pps[0][0] & 0x1F == 8
    annex_b = b"\x00\x00\x00\x01"
    decoder = av.CodecContext.create("h264", "r")
    decoded = 0
    frames = [t for t in tags if t.packet == 1]
    for tag in frames:
        units = nal_units(tag.data, config.length_size)
        prefix = b"".join(annex_b + p for p in (*config.sps, *config.pps)) if tag.keyframe else b""
        packet = av.Packet(prefix + b"".join(annex_b + bytes(u) for u in units))
        decoded += len(decoder.decode(packet))
    decoded += len(decoder.decode(None))
    assert decoded == len(frames)
    assert any(t.composition > 0 for t in frames)  # B-frames: presentation after decode for some
    dts = [t for (t, _), tag in zip(got.video, tags) if tag.packet == 1]
    pts = [d + t.composition for d, t in zip(dts, frames)]
    assert pts != sorted(pts) and dts == sorted(dts)  # sent in decode order; shown in another
    assert abs((max(pts) - min(pts)) - (dts[-1] - dts[0])) <= 200  # the same span, shown in another order

    audio = [audio_tag(payload) for _, payload in got.audio]
    assert audio[0].format == AAC and audio[0].packet == 0
    aac = aac_config(audio[0].data)
    assert (aac.object_type, aac.sample_rate, aac.channels) == (2, 44100, 1)
    aac_decoder = av.CodecContext.create("aac", "r")
    aac_decoder.extradata = bytes(audio[0].data)
    samples = sum(frame.samples for tag in audio[1:] for frame in aac_decoder.decode(av.Packet(bytes(tag.data))))
    assert 2.8 * 44100 <= samples <= 3.1 * 44100


def test_flv_reader_refuses_what_is_not_there() -> None:
    for bad in (b"", b"\x17\x00", b"\x80"):
        with pytest.raises(FlvError):
            video_tag(bad)
    enhanced = video_tag(b"\x91hvc1" + b"rest")  # enhanced RTMP: recognised, so it can be refused by name
    assert enhanced.fourcc == "hvc1" and enhanced.keyframe
    for bad in (b"\x00" * 7, b"\x01\x64\x00\x1f\xff\xe1\x00\x10abc", b"\x01\x64\x00\x1f\xfe\xe1\x00\x01g\x01\x00\x01h"):
        with pytest.raises(FlvError):
            avc_config(bad)
    for bad in (b"\x00\x00\x00\x05abc", b"\x00\x00\x00\x00", b"\x00\x00"):
        with pytest.raises(FlvError):
            nal_units(bad, 4)
    with pytest.raises(FlvError):
        aac_config(b"\x17\x90")  # sample rate index 15: explicit


async def _connect(port: int, shake: bool = True) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client connection, through the simple handshake when `shake`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if shake:
        writer.write(b"\x03" + bytes(HANDSHAKE))
        await reader.readexactly(1 + 2 * HANDSHAKE)  # S0 S1 S2
        writer.write(bytes(HANDSHAKE))  # C2
        await writer.drain()
    return reader, writer


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """How long until the server closes the connection (it must, within `seconds`)."""
    started = time.monotonic()
    while await asyncio.wait_for(reader.read(65536), timeout=seconds):
        pass
    return time.monotonic() - started


def _rtmp_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("rtmp-") and not t.done()]


async def test_stalled_silent_oversized_and_unreadable_connections_are_closed_and_leave_nothing() -> None:
    async def authorize(app: str, key: str, address: str) -> Publisher:
        return Collected()

    server = RtmpServer(authorize, Limits(handshake_timeout=0.5, idle_timeout=1.5, publish_timeout=2.5,
                                          max_per_address=3))
    port = await server.start("127.0.0.1", 0)
    try:
        # A handshake that stops half-way, and an encoder that says nothing after it.
        stalled, _w1 = await _connect(port, shake=False)
        _w1.write(b"\x03" + bytes(100))
        silent, _w2 = await _connect(port)
        assert await _closed_within(stalled, 3) < 2.5
        assert 1.0 < await _closed_within(silent, 4) < 3.5
        # A Set Chunk Size of 1 GB is legal, but a message larger than any frame is not taken: the
        # connection closes when its header comes (nothing is held for it).
        big, writer = await _connect(port)
        writer.write(header0(2, 0, 4, SET_CHUNK_SIZE, 0) + struct.pack(">I", 1 << 30) + header0(6, 0, 0xFFFFFF, VIDEO, 1)
                     + bytes(4096))
        assert await _closed_within(big, 3) < 1
        # A command that is not AMF0.
        garbage, writer = await _connect(port)
        writer.write(header0(3, 0, 8, COMMAND_AMF0, 0) + b"\x11\xff\xfe\x00garb")
        assert await _closed_within(garbage, 3) < 1
        await asyncio.sleep(0.1)
        assert not server.connections and not _rtmp_tasks()

        # A connection that keeps talking (acknowledgements) but never publishes holds no place for long.
        idler, writer = await _connect(port)
        connected = time.monotonic()
        closing = asyncio.ensure_future(_closed_within(idler, 6))
        while not closing.done() and time.monotonic() - connected < 5:
            writer.write(header0(2, 0, 4, ACKNOWLEDGEMENT, 0) + struct.pack(">I", 0))
            await asyncio.sleep(0.25)  # never silent for the 1.5 s that closes a silent one
        await closing
        assert 2.5 <= time.monotonic() - connected < 4.0

        # Three connections from one address are taken; a fourth is closed at once; the others go on.
        held = [await _connect(port) for _ in range(3)]
        fourth, _w4 = await _connect(port, shake=False)
        assert await _closed_within(fourth, 1) < 0.5
        assert len(server.connections) == 3
        held[0][1].close()
        await asyncio.sleep(0.2)
        code, log = await ffmpeg(f"rtmp://127.0.0.1:{port}/live/anything", seconds=1)
        assert code == 0, log[-2000:]  # room for one again
        for _, writer in held[1:]:
            writer.close()
        await asyncio.sleep(0.2)
        assert not server.connections and not _rtmp_tasks()
    finally:
        await server.close()


async def test_a_connection_that_has_not_asked_to_publish_may_hold_little() -> None:
    """Before its publish command a connection sends only commands: a frame-sized message, or half-read
    messages adding up past 128 KiB, close it (64 of them would otherwise hold 512 MiB); after it,
    frames of any real size are taken (FFmpeg's keyframes, above and in every ingest test)."""
    async def authorize(app: str, key: str, address: str) -> Publisher:
        return Collected()

    server = RtmpServer(authorize)
    port = await server.start("127.0.0.1", 0)
    try:
        frame, writer = await _connect(port)
        writer.write(header0(6, 0, 200_000, VIDEO, 1) + bytes(128))
        assert await _closed_within(frame, 3) < 1
        halves, writer = await _connect(port)
        for csid in range(4, 8):  # four 60 KB messages, each half sent: 4 × 30 KB, then more
            writer.write(header0(csid, 0, 60_000, VIDEO, 1) + bytes(128))
            for _ in range(300):
                writer.write(bytes([0xC0 | csid]) + bytes(128))  # type 3 continuations
        assert await _closed_within(halves, 3) < 1
        await asyncio.sleep(0.1)
        assert not server.connections

        # A publish command with the first frame behind it, in one read (an encoder that does not wait
        # for the answer): the frame is taken.
        eager, writer = await _connect(port)
        from sfu.rtmp import amf0

        publish = amf0.encode("publish", 5, None, "key", "live")
        writer.write(header0(8, 0, len(publish), COMMAND_AMF0, 1) + publish + header0(6, 0, 200_000, VIDEO, 1)
                     + bytes(128))
        with pytest.raises(TimeoutError):
            await _closed_within(eager, 1)  # still open: the frame's chunks are awaited
        writer.close()
    finally:
        await server.close()
