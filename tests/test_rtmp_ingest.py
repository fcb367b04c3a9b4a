"""RTMP ingest. In an SFU node: FFmpeg publishes H.264 and AAC over RTMP to our server, the node takes
the room once the encoder said what it sends, and a WebRTC viewer (aiortc) decodes the video and hears
the audio (AAC transcoded once to Opus); the room's frame sinks get frames PyAV decodes (the AAC as
it came), in the order
sent, also from an encoder that sends B-frames (re-encoded without them). A second encoder on a live
room reads why it was refused in its own log. In the whole
server (`RTMP_PORT`): the stream key decides the channel, the channel goes live, WHEP and HLS play it,
and a wrong key or path is refused in words."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from support import Api, free_port
from test_rtmp_session import ffmpeg, published_by_ffmpeg
from test_whip_whep import post_sdp
from tls_files import self_signed
from webrtc_peer import Peer

from sfu import aiortc_internals as internals
from sfu.errors import SfuError
from sfu.frame_sink import EncodedFrame
from sfu.node import NodeSettings, SfuNode
from sfu.rtmp.ingest import refusal
from sfu.rtmp.session import Publisher, Refused, RtmpServer
from signaling.app import SERVICES

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")

ROOM = "caster"


@dataclass
class Events:
    started: list[list[object]] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)

    async def stream_started(self, room: str, stream: str, user: str | None, formats: list[object]) -> None:
        self.started.append(formats)

    async def stream_ended(self, room: str, stream: str, reason: str, peak_viewers: int) -> None:
        self.ended.append(reason)

    async def viewers_changed(self, room: str, stream: str, viewers: int) -> None:
        return None


class Frames:
    def __init__(self) -> None:
        self.got: list[EncodedFrame] = []

    def on_frame(self, room: str, frame: EncodedFrame) -> None:
        self.got.append(frame)


@pytest.fixture
async def rtmp() -> AsyncIterator[tuple[SfuNode, Events, int]]:
    events = Events()
    node = SfuNode(NodeSettings(ice=internals.IcePlan(("127.0.0.1",)), viewers_interval=0.2,
                                publisher_connect_timeout=2.0), events)
    await node.start()

    async def authorize(app: str, key: str, address: str) -> Publisher:
        try:
            return node.rtmp_publisher(ROOM, "caster", "127.0.0.1")
        except SfuError as exc:
            raise Refused(refusal(exc)) from None

    server = RtmpServer(authorize)
    port = await server.start("127.0.0.1", 0)
    try:
        yield node, events, port
    finally:
        await server.close()
        await node.close()


async def _until(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("bframes", [0, 2])
async def test_an_rtmp_stream_plays_to_a_webrtc_viewer_and_feeds_the_sinks(
        rtmp: tuple[SfuNode, Events, int], bframes: int) -> None:
    node, events, port = rtmp
    sink = Frames()
    node.sinks.add(ROOM, sink)
    encoder = asyncio.ensure_future(ffmpeg(f"rtmp://127.0.0.1:{port}/live/key", seconds=8.0, bframes=bframes))
    viewer = Peer.viewer()
    try:
        await _until(lambda: node.is_live(ROOM) or encoder.done())
        assert node.is_live(ROOM), encoder.result()[1][-2000:]
        (formats,) = events.started
        assert sorted(f.mime_type for f in formats) == ["audio/opus", "video/H264"]  # type: ignore[attr-defined]
        session, answer = await node.subscribe(ROOM, await viewer.offer(), None)
        await viewer.answer(answer)
        await viewer.wait_frames(60, timeout=15)  # FFmpeg sends a keyframe every second
        await _until(lambda: viewer.audio_samples >= 48_000)  # a second of the tone, through AAC and Opus
        assert viewer.last_size == (320, 240)
        code, log = await encoder
        assert code == 0, log[-2000:]
        await _until(lambda: bool(events.ended))
        assert not node.is_live(ROOM) and "encoder" in events.ended[0]
    finally:
        encoder.cancel()
        await asyncio.gather(encoder, return_exceptions=True)
        await viewer.close()

    video = [f for f in sink.got if f.kind == "video"]
    audio = [f for f in sink.got if f.kind == "audio"]
    assert video[0].keyframe and video[0].mapping is not None and len(video) >= 200
    steps = [(b.rtp_timestamp - a.rtp_timestamp) & 0xFFFFFFFF for a, b in zip(video, video[1:])]
    assert all(0 < step < 9000 for step in steps), steps  # in presentation order: each frame after the last
    decoder = av.CodecContext.create("h264", "r")
    decoder.thread_count = 1
    pictures = [p for f in video for p in decoder.decode(av.Packet(f.data))]
    assert len(pictures) == len(video)  # each frame decodes as it comes: nothing held back to reorder
    assert all(p.pict_type != av.video.frame.PictureType.B for p in pictures)
    # The AAC as the encoder sent it (for HLS and recordings), one frame of samples apart.
    assert audio[0].codec == "aac" and audio[0].clock_rate == 44_100 and audio[0].config
    assert {(b.rtp_timestamp - a.rtp_timestamp) & 0xFFFFFFFF for a, b in zip(audio, audio[1:])} == {1024}
    aac = av.CodecContext.create("aac", "r")
    aac.extradata = audio[0].config
    samples = sum(frame.samples for f in audio for frame in aac.decode(av.Packet(f.data)))
    assert abs(samples / 44_100 - 8.0) < 0.5, samples
    # One clock for both: a video frame and the audio captured with it map to the same sender time.
    assert video[0].sender_time() is not None and audio[0].sender_time() is not None
    assert abs(video[0].sender_time() - audio[0].sender_time()) < 0.2  # type: ignore[operator]


async def test_a_second_encoder_and_the_end_of_a_stream_are_told_in_words_the_encoder_logs(rtmp: tuple[SfuNode, Events, int]) -> None:
    node, events, port = rtmp
    first = asyncio.ensure_future(ffmpeg(f"rtmp://127.0.0.1:{port}/live/key", seconds=6.0, bframes=0))
    try:
        await _until(lambda: node.is_live(ROOM) or first.done())
        code, log = await ffmpeg(f"rtmp://127.0.0.1:{port}/live/key", seconds=2.0, bframes=0)
        assert code != 0 and "already" in log.lower(), log[-2000:]
        assert node.is_live(ROOM) and not first.done()  # the first encoder goes on
        # The node ends the stream: the encoder's log says why.
        node.end_room(ROOM, "its channel went live on another node")
        code, log = await asyncio.wait_for(first, 10)
        assert code != 0 and "the server ended the stream: its channel went live on another node" in log, log[-2000:]
    finally:
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("scheme", ["rtmp", "rtmps"])
async def test_the_server_takes_obs_style_rtmp_by_stream_key_and_plays_it_over_whep_and_hls(
        app_factory: Callable[..., web.Application], clock: object, scheme: str, tmp_path: Path) -> None:
    port = free_port()
    if scheme == "rtmps":  # TLS on its own port, with the certificate from settings
        cert, private = self_signed(tmp_path)
        app = app_factory(webrtc_host_addresses=["127.0.0.1"], rtmps_port=port, rtmps_cert=cert, rtmps_key=private)
    else:
        app = app_factory(webrtc_host_addresses=["127.0.0.1"], rtmp_port=port)
    async with TestClient(TestServer(app)) as client:
        api = Api(client, app[SERVICES], clock)  # type: ignore[arg-type]
        name, token = await api.user()
        status, shown, _ = await api.call("GET", "/api/me/stream-key", token=token)
        key, url = shown["key"], f"{scheme}://127.0.0.1:{port}/live"
        # On the public host, beside the WHIP URL; null for what is off.
        assert shown[f"{scheme}_url"] == f"{scheme}://tally.test:{port}/live"
        assert shown["rtmps_url" if scheme == "rtmp" else "rtmp_url"] is None

        code, log = await ffmpeg(f"{url}/tlsk_{'x' * 40}", seconds=1.0, bframes=0)
        assert code != 0 and "stream key is not valid" in log, log[-2000:]
        code, log = await ffmpeg(f"{scheme}://127.0.0.1:{port}/other/{key}", seconds=1.0, bframes=0)
        assert code != 0 and f"rtmp://HOST/live" in log, log[-2000:]

        encoder = asyncio.ensure_future(ffmpeg(f"{url}/{key}", seconds=10.0, bframes=0))
        viewer = Peer.viewer()
        try:
            async def live() -> bool:
                status, body, _ = await api.call("GET", f"/api/channels/{name}")
                return bool(body["is_live"]) or encoder.done()

            deadline = time.monotonic() + 15
            while not await live():
                assert time.monotonic() < deadline, "the channel did not go live"
                await asyncio.sleep(0.1)
            assert not encoder.done(), encoder.result()[1][-2000:]
            status, body, _ = await post_sdp(api, f"/whep/{name}", await viewer.offer())
            assert status == 201, body
            await viewer.answer(body.decode())
            await viewer.wait_frames(30, timeout=15)
            await _until(lambda: viewer.audio_samples >= 48_000)
            # /metrics: the connection, the bytes, and the stream's ingest (FFmpeg sends 30 fps: a
            # busy machine may bunch them up, so the last seconds' average gets there in the end).
            fps = f'tally_rtmp_ingest_frames_per_second{{channel="{name}"}}'
            deadline = time.monotonic() + 10
            while True:
                _, text, _ = await api.call("GET", "/metrics")
                series = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                          for line in text.decode().splitlines() if line.startswith("tally_rtmp_")}
                if 28 <= series[fps] <= 32:
                    break
                assert time.monotonic() < deadline, series
                await asyncio.sleep(0.5)
            assert series["tally_rtmp_connections"] == 1 and series["tally_rtmp_received_bytes_total"] > 50_000, series
            assert series[f'tally_rtmp_ingest_bits_per_second{{channel="{name}"}}'] > 50_000, series
            assert series[f'tally_rtmp_reencoded{{channel="{name}"}}'] == 0, series
            # The HLS ladder starts from the same frames (the source's H.264 passed through, AAC again).
            probed = await asyncio.to_thread(
                subprocess.run, ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width", "-of", "csv=p=0",
                                 f"{api.client.make_url(f'/hls/{name}/index.m3u8')}"], capture_output=True, text=True,
                timeout=60)
            streams = set(probed.stdout.split())
            assert {"h264,320", "aac"} <= streams, probed
            code, log = await encoder
            assert code == 0, log[-2000:]
            await _until(lambda: not api.services.node.is_live(name))
        finally:
            encoder.cancel()
            await asyncio.gather(encoder, return_exceptions=True)
            await viewer.close()


async def test_an_encoder_without_video_is_told_and_lets_the_channel_go(rtmp: tuple[SfuNode, Events, int]) -> None:
    node, events, port = rtmp
    process = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-re", "-f", "lavfi", "-i", "sine=frequency=440:duration=6", "-c:a", "aac",
        "-f", "flv", f"rtmp://127.0.0.1:{port}/live/key", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    log = err.decode(errors="replace")
    assert process.returncode != 0 and "no H.264 video arrived within 2 s" in log, log[-2000:]
    assert not events.started
    # The channel is free again: a whole encoder goes live on it.
    code, log = await ffmpeg(f"rtmp://127.0.0.1:{port}/live/key", seconds=2.0, bframes=0)
    assert code == 0 and events.started, log[-2000:]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_guessing_stream_keys_over_rtmp_is_limited_as_over_whip(
        app_factory: Callable[..., web.Application]) -> None:
    port = free_port()
    app = app_factory(webrtc_host_addresses=["127.0.0.1"], rtmp_port=port, rate_whip_per_minute=2)
    async with TestClient(TestServer(app)):
        for attempt in range(3):
            code, log = await ffmpeg(f"rtmp://127.0.0.1:{port}/live/tlsk_{'x' * 40}", seconds=1.0, bframes=0)
            words = "stream key is not valid" if attempt < 2 else "too many attempts to publish from this address"
            assert code != 0 and words in log, log[-2000:]


async def test_audio_announced_in_the_metadata_is_waited_for_when_its_header_comes_late(
        rtmp: tuple[SfuNode, Events, int]) -> None:
    node, events, _ = rtmp
    got = await published_by_ffmpeg(3.0)
    assert got.metadata.get("audiocodecid")
    header, *audio = got.audio
    publisher = node.rtmp_publisher(ROOM, "caster", "127.0.0.1")
    publisher.started(lambda why: None)
    publisher.on_metadata(got.metadata)
    late = [(t, p) for t, p in got.video if t <= 500]  # half a second of video before the AAC header
    for timestamp, payload in late:
        publisher.on_video(timestamp, payload)
    assert not node.is_live(ROOM)
    publisher.on_audio(*header)
    for timestamp, payload in got.video[len(late):len(late) + 5]:
        publisher.on_video(timestamp, payload)
    assert node.is_live(ROOM)
    await _until(lambda: bool(events.started))
    assert sorted(f.mime_type for f in events.started[0]) == ["audio/opus", "video/H264"]  # type: ignore[attr-defined]
    publisher.end("the encoder stopped")


async def test_an_encoder_that_drops_and_comes_back_takes_its_stream_over_and_the_viewers_stay(
        rtmp: tuple[SfuNode, Events, int]) -> None:
    node, events, port = rtmp
    url = f"rtmp://127.0.0.1:{port}/live/key"
    first = asyncio.ensure_future(ffmpeg(url, seconds=30.0, bframes=0))
    viewer = Peer.viewer()
    second: asyncio.Future[tuple[int, str]] | None = None
    try:
        await _until(lambda: node.is_live(ROOM) or first.done())
        session, answer = await node.subscribe(ROOM, await viewer.offer(), None)
        await viewer.answer(answer)
        await viewer.wait_frames(30, timeout=15)
        first.cancel()  # the encoder is killed: its connection drops without a word
        await asyncio.gather(first, return_exceptions=True)
        await asyncio.sleep(2.2)  # OBS reconnects after 2 s by default
        assert node.is_live(ROOM) and not events.ended  # the stream waits for it
        before = viewer.frames
        second = asyncio.ensure_future(ffmpeg(url, seconds=4.0, bframes=0))
        await _until(lambda: viewer.frames >= before + 60 or second.done())  # the same viewer session
        assert viewer.frames >= before + 60, (second.result()[1][-2000:] if second.done() else "")
        assert len(events.started) == 1 and not events.ended  # one stream all along
        code, log = await second
        assert code == 0, log[-2000:]
        await _until(lambda: bool(events.ended))  # it stopped with a word: the stream ends at once
    finally:
        for encoder in (first, second):
            if encoder is not None:
                encoder.cancel()
                await asyncio.gather(encoder, return_exceptions=True)
        await viewer.close()


async def test_an_encoder_that_drops_and_does_not_come_back_ends_its_stream_after_the_publisher_timeout() -> None:
    events = Events()
    node = SfuNode(NodeSettings(ice=internals.IcePlan(("127.0.0.1",)), publisher_timeout=1.0), events)
    await node.start()

    async def authorize(app: str, key: str, address: str) -> Publisher:
        return node.rtmp_publisher(ROOM, "caster", address)

    server = RtmpServer(authorize)
    port = await server.start("127.0.0.1", 0)
    encoder = asyncio.ensure_future(ffmpeg(f"rtmp://127.0.0.1:{port}/live/key", seconds=30.0, bframes=0))
    try:
        await _until(lambda: node.is_live(ROOM) or encoder.done())
        encoder.cancel()
        await asyncio.gather(encoder, return_exceptions=True)
        dropped = time.monotonic()
        await _until(lambda: bool(events.ended), timeout=5)
        assert 0.8 < time.monotonic() - dropped < 3.0 and not node.is_live(ROOM)
    finally:
        encoder.cancel()
        await asyncio.gather(encoder, return_exceptions=True)
        await server.close()
        await node.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_account_no_longer_allowed_to_broadcast_is_refused_in_words(
        app_factory: Callable[..., web.Application], clock: object) -> None:
    from signaling.auth.roles import Role

    port = free_port()
    app = app_factory(webrtc_host_addresses=["127.0.0.1"], rtmp_port=port)
    async with TestClient(TestServer(app)) as client:
        api = Api(client, app[SERVICES], clock)  # type: ignore[arg-type]
        name, token = await api.user()
        _, shown, _ = await api.call("GET", "/api/me/stream-key", token=token)
        await api.services.accounts.set_role(name, Role.parse("viewer"))  # an admin took the role away
        code, log = await ffmpeg(f"rtmp://127.0.0.1:{port}/live/{shown['key']}", seconds=1.0, bframes=0)
        assert code != 0 and "publishing needs the broadcaster role" in log, log[-2000:]
        assert not api.services.node.is_live(name)


async def test_an_encoder_back_with_other_audio_starts_a_new_stream(rtmp: tuple[SfuNode, Events, int]) -> None:
    """The recorder and the ladder keep the AAC they started with: a takeover must not change it under them."""
    node, events, port = rtmp
    url = f"rtmp://127.0.0.1:{port}/live/key"
    first = asyncio.ensure_future(ffmpeg(url, seconds=30.0, bframes=0, audio_rate=44_100))
    second: asyncio.Future[tuple[int, str]] | None = None
    try:
        await _until(lambda: node.is_live(ROOM) or first.done())
        first.cancel()  # dropped without a word
        await asyncio.gather(first, return_exceptions=True)
        await asyncio.sleep(2.2)
        second = asyncio.ensure_future(ffmpeg(url, seconds=3.0, bframes=0, audio_rate=48_000))
        await _until(lambda: len(events.started) == 2 or second.done())
        assert len(events.started) == 2 and events.ended == ["the publisher reconnected with another format"], events
    finally:
        for encoder in (first, second):
            if encoder is not None:
                encoder.cancel()
                await asyncio.gather(encoder, return_exceptions=True)
