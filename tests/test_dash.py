"""Live LL-DASH against the real server, SFU and transcoder, aiortc publishing on loopback: the MPD
checked over time by the checker (mpegdash parsing it), segments fetched when the MPD says they are
available and received chunk by chunk while being made, the same CMAF bytes as LL-HLS, ffprobe and
ffmpeg reading the MPD, the end of a stream (a static MPD), and bad input. (dash.js in Chromium is in
tests/browser/test_dash_pages.py; the nginx edge in tests/test_hls_edge.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dash_checker import LiveMpdChecker, decode_time, fragments
from hls_validator import parse
from signaling.app import SERVICES
from support import Api, FakeClock
from test_hls import get, hls, live_channel, run, variants  # noqa: F401 (the fixture)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def timed_get(api: Api, path: str) -> tuple[int, bytes, list[float], float]:
    """Status, body, when each chunk arrived and when the answer ended (seconds after asking)."""
    asked = time.monotonic()
    arrivals = []
    body = b""
    async with api.client.get(path) as response:
        async for chunk in response.content.iter_any():
            arrivals.append(time.monotonic() - asked)
            body += chunk
        return response.status, body, arrivals, time.monotonic() - asked


async def test_a_live_stream_is_ll_dash_from_the_same_cmaf_as_its_ll_hls(hls: Api) -> None:  # noqa: F811
    name, token, peer, headers = await live_channel(hls)
    status, body, head = await get(hls, f"/dash/{name}/manifest.mpd")  # waits for the first segment
    assert status == 200, body
    assert head["Content-Type"].startswith("application/dash+xml") and head["Cache-Control"] == "public, max-age=1"
    checker = LiveMpdChecker()
    mpd = checker.check(body.decode())
    assert mpd.dynamic and mpd.target_latency == 1.5 and mpd.window == 18
    assert [(t.kind, t.id) for t in mpd.tracks] == [("video", "source"), ("video", "180p"), ("audio", "audio")]
    # The UTCTiming clock is the origin's: ISO 8601, within a second of this machine's.
    status, clock, head = await get(hls, "/dash/time")
    assert status == 200 and head["Cache-Control"] == "no-store" and mpd.clock_url.endswith("/dash/time")
    assert abs(datetime.fromisoformat(clock.decode().replace("Z", "+00:00")).timestamp() - time.time()) < 1
    base = f"/dash/{name}/"
    for track in mpd.tracks:
        status, init, head = await get(hls, base + track.init)
        assert status == 200 and head["Cache-Control"] == "public, max-age=31536000, immutable" and b"moov" in init
    # For 8 s: reload the MPD as a player would, and fetch the newest segment of each track the moment
    # the MPD makes it available (a part after it starts): it arrives chunk by chunk while being made.
    chunked = 0
    fetched: dict[str, list[int]] = {t.id: [] for t in mpd.tracks}
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        _, body, _ = await get(hls, f"/dash/{name}/manifest.mpd")
        mpd = checker.check(body.decode())
        for track in mpd.tracks:
            numbers = mpd.available(time.time(), track)
            newest = numbers[-1]
            if newest in fetched[track.id]:
                continue
            status, segment, arrivals, took = await timed_get(hls, base + track.url(newest))
            assert status == 200, (track.id, newest, segment[:200])
            fetched[track.id].append(newest)
            # Segment N starts at N segments of stream time: on the grid, within a frame or two.
            start = decode_time(segment) / track.timescale
            assert abs(start - newest * track.seconds) <= 0.1, (track.id, newest, start)
            assert fragments(segment) >= 5  # its parts, each a CMAF chunk
            if took > 0.7 and len(arrivals) >= 3:  # asked while being made: the first chunk came at once
                assert arrivals[0] < 0.6, (track.id, arrivals)
                chunked += 1
        await asyncio.sleep(0.2)
    assert checker.checked >= 10
    assert chunked >= 4, fetched
    for track in mpd.tracks:  # numbers went on one by one: no segment was missing
        numbers = fetched[track.id]
        assert len(numbers) >= 3 and numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
        oldest = mpd.available(time.time(), track)[0]
        status, _, _ = await get(hls, base + track.url(oldest))  # the whole time-shift buffer is there
        assert status == 200, (track.id, oldest)
    # One packaging: a complete DASH segment is byte for byte an HLS segment of the same rendition.
    _, master, _ = await get(hls, f"/hls/{name}/index.m3u8")
    uri = variants(master.decode())[0][1]
    _, playlist, _ = await get(hls, f"/hls/{name}/{uri}")
    folder = f"/hls/{name}/" + uri.rsplit("/", 1)[0] + "/"
    hls_segments = {(await get(hls, folder + s.uri))[1] for s in parse(playlist.decode()).segments}
    source = next(t for t in mpd.tracks if t.id == "source")
    _, dash_segment, _ = await get(hls, base + source.url(fetched["source"][-2]))
    assert dash_segment in hls_segments
    # ffprobe reads the live MPD: H.264 and AAC.
    info = (await run("ffprobe", "-v", "error", "-print_format", "json", "-show_streams",
                      str(hls.client.make_url(f"/dash/{name}/manifest.mpd")))).stdout
    assert '"codec_name": "h264"' in info and '"codec_name": "aac"' in info, info
    await peer.close()


async def test_an_ended_stream_is_a_static_mpd_of_its_window_that_plays_to_its_end(
    app_factory: Callable[..., web.Application], clock: FakeClock
) -> None:
    app = app_factory(webrtc_host_addresses=["127.0.0.1"], publisher_timeout=3.0, hls_linger_seconds=30,
                      hls_window_segments=3)  # 6 s kept: the stream outlasts its window
    async with TestClient(TestServer(app)) as client:
        api = Api(client, app[SERVICES], clock)
        name, token, peer, headers = await live_channel(api)
        status, body, _ = await get(api, f"/dash/{name}/manifest.mpd")
        assert status == 200, body
        checker = LiveMpdChecker()
        live = checker.check(body.decode())
        assert live.window == 4  # two segments short of the window: what is there to the end
        await asyncio.sleep(10)
        await peer.close()
        for _ in range(100):
            status, body, head = await get(api, f"/dash/{name}/manifest.mpd")
            if b'type="static"' in body:
                break
            await asyncio.sleep(0.1)
        ended = checker.check(body.decode())
        # Cached briefly: the channel's next stream will have the same MPD URL.
        assert not ended.dynamic and head["Cache-Control"] == "public, max-age=2"
        assert [t.id for t in ended.tracks] == [t.id for t in live.tracks]
        assert 10 <= ended.duration <= 20, ended.duration
        # It describes the window only: its first number is the oldest segment kept, and its period
        # starts at that segment's time, so the numbers and media times are the live MPD's.
        track = ended.tracks[0]
        assert ended.first >= 2 and ended.period_start == ended.first * track.seconds, ended
        status, first, _ = await get(api, f"/dash/{name}/" + track.url(ended.first))
        assert status == 200 and abs(decode_time(first) / track.timescale - ended.first * track.seconds) < 0.1
        status, _, _ = await get(api, f"/dash/{name}/" + track.url(ended.first - 1))
        assert status == 404  # out of the window, as the MPD says
        # Past the end, nothing is waited for.
        last = int(ended.duration // track.seconds)
        status, _, _ = await get(api, f"/dash/{name}/" + track.url(last + 1))
        assert status == 404
        # ffmpeg, opening the ended MPD, plays the whole window without a decoding error.
        out = await run("ffmpeg", "-v", "error", "-i", str(client.make_url(f"/dash/{name}/manifest.mpd")),
                        "-f", "null", "-")
        assert out.returncode == 0 and out.stderr.strip() == "", out.stderr


async def test_bad_dash_requests_get_clear_errors(hls: Api) -> None:  # noqa: F811
    status, body, head = await get(hls, "/dash/nobody/manifest.mpd")
    assert status == 404 and head["Content-Type"].startswith("application/problem+json") and head["Cache-Control"] == "no-store"
    name, token, peer, headers = await live_channel(hls)
    status, body, _ = await get(hls, f"/dash/{name}/manifest.mpd")
    mpd = LiveMpdChecker().check(body.decode())
    track = mpd.tracks[0]
    prefix = f"/dash/{name}/" + track.media.rsplit("/", 1)[0] + "/"
    newest = mpd.available(time.time(), track)[-1]
    for bad in ("x.m4s", "-1.m4s", "1.mp4", "init.mp4", "99999999999.m4s", "1.m4s.mp4", "init1.m4s"):
        status, _, head = await get(hls, prefix + bad)
        assert status == 404 and head["Cache-Control"] == "no-store", bad
    status, _, _ = await get(hls, prefix + f"{newest + 10}.m4s")  # far ahead: not waited for
    assert status == 404
    status, _, _ = await get(hls, f"/dash/{name}/old-stream/source/1.m4s")
    assert status == 404
    status, _, _ = await get(hls, prefix.replace("/source/", "/nope/") + "1.m4s")
    assert status == 404
    await peer.close()
