"""Live HLS against the real server, SFU and transcoder with aiortc publishers on loopback: the ladder
read back by ffprobe/ffmpeg, LL-HLS playlists checked by the validator over time, blocking reloads,
delta updates, the end of a stream, and bad input. (hls.js in Chromium and the nginx edge are in
tests/browser/test_hls_pages.py and tests/test_hls_edge.py.)"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hls_validator import LiveValidator, attributes, parse
from media_probe import decode_errors, probe
from signaling.app import SERVICES
from support import Api, FakeClock
from test_whip_whep import go_live, stream_key

# HLS keeps nothing in the database: one database is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
async def hls(app_factory: Callable[..., web.Application], clock: FakeClock) -> AsyncIterator[Api]:
    app = app_factory(webrtc_host_addresses=["127.0.0.1"], publisher_timeout=3.0, hls_linger_seconds=30)
    async with TestClient(TestServer(app)) as client:
        yield Api(client, app[SERVICES], clock)


async def get(api: Api, path: str) -> tuple[int, bytes, Any]:
    async with api.client.get(path) as response:
        return response.status, await response.read(), response.headers


async def run(*command: str) -> subprocess.CompletedProcess[str]:
    """A checker reading from the server: in a thread, so the server on this loop can answer it."""
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=120)


def variants(text: str) -> list[tuple[dict[str, str], str]]:
    lines = text.splitlines()
    return [(attributes(line.split(":", 1)[1]), lines[i + 1]) for i, line in enumerate(lines) if line.startswith("#EXT-X-STREAM-INF:")]


async def live_channel(api: Api, codec: str = "h264") -> tuple[str, str, Any, Any]:
    """A channel live with video and audio, its HLS ladder started as the first HLS request starts it."""
    name, token = await api.user()
    peer, headers = await go_live(api, name, await stream_key(api, token), codec=codec, audio=True)
    for _ in range(100):
        if api.services.node.is_live(name):
            break
        await asyncio.sleep(0.1)
    for _ in range(100):  # the stream's start reaches the HLS service after it is written down
        if api.services.hls.serves(name):
            break
        await asyncio.sleep(0.05)
    assert api.services.hls.live(name) is None  # on demand: nothing runs before someone asks
    assert api.services.hls.ensure(name) is not None
    return name, token, peer, headers


async def test_a_live_h264_stream_is_an_ll_hls_ladder_that_ffprobe_reads(hls: Api, tmp_path: Path) -> None:
    name, token, peer, headers = await live_channel(hls)
    status, body, head = await get(hls, f"/hls/{name}/index.m3u8")  # waits for the first segment
    assert status == 200, body
    assert head["Content-Type"] == "application/vnd.apple.mpegurl" and "max-age" in head["Cache-Control"]
    ladder = variants(body.decode())
    # A 640x360 source: the source passed through and 180p encoded (360p would not be smaller).
    assert [v["RESOLUTION"] for v, _ in ladder] == ["640x360", "320x180"], body
    for v, _ in ladder:
        codecs = v["CODECS"].split(",")
        assert codecs[0].startswith("avc1.") and codecs[1] == "mp4a.40.2" and int(v["BANDWIDTH"]) > 100_000
        assert v["AUDIO"] == "aac"  # the audio is its own rendition, shared (DASH players need it apart)
    media = [attributes(line.split(":", 1)[1]) for line in body.decode().splitlines() if line.startswith("#EXT-X-MEDIA:")]
    assert [(m["TYPE"], m["GROUP-ID"], m["DEFAULT"]) for m in media] == [("AUDIO", "aac", "YES")], body
    audio_uri = media[0]["URI"]
    base = f"/hls/{name}/"
    validators = {uri: LiveValidator() for _, uri in ladder}
    validators[audio_uri] = LiveValidator()
    deadline = asyncio.get_running_loop().time() + 7.0
    while asyncio.get_running_loop().time() < deadline:
        for uri, validator in validators.items():
            status, text, head = await get(hls, base + uri)
            assert status == 200 and head["Cache-Control"] == "public, max-age=1"
            playlist = validator.check(text.decode())
            assert len(playlist.reports) == (0 if uri == audio_uri else len(ladder) - 1)  # other videos reported
        await asyncio.sleep(0.25)
    for validator in validators.values():
        assert len(validator.seen) >= 3 and validator.parts_checked > 20
    # Every rendition's segments start at the same times (keyframes aligned).
    starts = []
    for uri in validators:
        _, text, _ = await get(hls, base + uri)
        starts.append([s.msn for s in parse(text.decode()).segments])
    assert starts[0] == starts[1] == starts[2][-len(starts[0]):]
    # ffprobe reads the whole: each video rendition with the audio.
    info = (await run("ffprobe", "-v", "error", "-print_format", "json", "-show_streams",
                      str(hls.client.make_url(f"/hls/{name}/index.m3u8")))).stdout
    assert '"codec_name": "h264"' in info and '"codec_name": "aac"' in info
    # ffprobe/ffmpeg read the live ladder: codecs, sizes, and every segment decodes.
    for (v, uri), expected in zip(ladder, [(640, 360), (320, 180)]):
        url = str(hls.client.make_url(base + uri))
        info = (await run("ffprobe", "-v", "error", "-print_format", "json", "-show_streams", url)).stdout
        assert '"codec_name": "h264"' in info and '"codec_name": "aac"' not in info
        assert f'"width": {expected[0]}' in info and f'"height": {expected[1]}' in info
        _, text, _ = await get(hls, base + uri)
        playlist = parse(text.decode())
        folder = base + uri.rsplit("/", 1)[0] + "/"
        _, init, head = await get(hls, folder + playlist.tags["EXT-X-MAP"].split('"')[1])
        assert head["Cache-Control"] == "public, max-age=31536000, immutable"
        segment = playlist.segments[-1]
        _, media, _ = await get(hls, folder + segment.uri)
        path = tmp_path / f"{expected[1]}.mp4"
        path.write_bytes(init + media)
        got = probe(path)
        length = float(str(got.streams["video"]["duration"])) - got.start("video")
        assert abs(length - segment.duration) < 0.1, (length, segment.duration)
        assert 1.5 <= segment.duration <= 2.5
        assert decode_errors(path) == ""
    await peer.close()


async def test_blocking_reload_and_preload_hints_answer_when_the_part_exists(hls: Api) -> None:
    name, token, peer, headers = await live_channel(hls)
    status, body, _ = await get(hls, f"/hls/{name}/index.m3u8")
    assert status == 200
    uri = variants(body.decode())[0][1]
    media = f"/hls/{name}/{uri}"
    folder = media.rsplit("/", 1)[0] + "/"
    _, text, _ = await get(hls, media)
    p = parse(text.decode())
    last = p.segments[-1].msn
    next_msn, next_part = last + 1, len(p.pending_parts)
    loop = asyncio.get_running_loop()
    asked = loop.time()
    status, text, head = await get(hls, f"{media}?_HLS_msn={next_msn}&_HLS_part={next_part}")
    waited = loop.time() - asked
    assert status == 200 and waited < 1.5, waited
    assert head["Cache-Control"].startswith("public, max-age=")
    later = parse(text.decode())
    mine = later.pending_parts if later.segments[-1].msn < next_msn else None
    assert mine is None or len(mine) > next_part
    # The preload hint's part is answered as soon as it is cut.
    hint = later.preload_hint
    assert hint is not None
    asked = loop.time()
    status, data, head = await get(hls, folder + hint["URI"])
    assert status == 200 and data[4:8] == b"moof" and loop.time() - asked < 1.5
    assert head["Cache-Control"] == "public, max-age=31536000, immutable"
    # Too far ahead, or malformed: 400 at once.
    for query in (f"_HLS_msn={last + 10}", "_HLS_part=1", "_HLS_msn=abc", "_HLS_msn=-1", "_HLS_msn=1&_HLS_part=x",
                  "_HLS_skip=maybe", "_HLS_msn=99999999999"):
        status, body, head = await get(hls, f"{media}?{query}")
        assert status == 400, (query, body)
        assert head["Content-Type"].startswith("application/problem+json") and head["Cache-Control"] == "no-store"
    for path in (f"/hls/{name}/nostream/source/index.m3u8", f"{folder}p999999.m4s", f"{folder}s99999.m4s",
                 f"{folder}init9.mp4", f"{folder}x.m4s", f"{folder}init1.m4s", f"{folder}../../../etc/passwd",
                 "/hls/nobody-here/index.m3u8", f"/hls/{name}/{uri.split('/')[0]}/720p/index.m3u8"):
        status, body, head = await get(hls, path)
        assert status == 404, (path, body)
    await peer.close()


async def test_a_vp8_stream_is_encoded_to_an_aligned_ladder_with_delta_updates_and_an_end(
    app_factory: Callable[..., web.Application], clock: FakeClock, tmp_path: Path
) -> None:
    app = app_factory(webrtc_host_addresses=["127.0.0.1"], publisher_timeout=3.0, hls_segment_seconds=1.0,
                      hls_part_seconds=0.25, hls_ladder="source,180p@200")
    async with TestClient(TestServer(app)) as client:
        api = Api(client, app[SERVICES], clock)
        name, token, peer, headers = await live_channel(api, "vp8")
        status, body, _ = await get(api, f"/hls/{name}/index.m3u8")
        assert status == 200, body
        ladder = variants(body.decode())
        assert [v["RESOLUTION"] for v, _ in ladder] == ["640x360", "320x180"]
        media = f"/hls/{name}/{ladder[0][1]}"
        validator = LiveValidator()
        # Reloads until the playlist holds more than CAN-SKIP-UNTIL (6 s) of segments: about 9 s, longer
        # when a busy machine starts the VP8 decode and the ladder late (CI run Y).
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            _, text, _ = await get(api, media)
            p = validator.check(text.decode())
            assert p.tags["EXT-X-TARGETDURATION"] == "1"
            if len(p.segments) >= 9:
                break
            assert asyncio.get_running_loop().time() < deadline, f"{len(p.segments)} segments after 30 s"
            await asyncio.sleep(0.2)
        # Segments are cut every second by the encoder, not at the source's keyframes.
        durations = [s.duration for s in validator.seen.values()]
        assert all(0.9 <= d <= 1.1 for d in durations[:-1]), durations
        # A delta update leaves out what is older than CAN-SKIP-UNTIL (6 s here).
        _, text, _ = await get(api, media + f"?_HLS_msn={p.segments[-1].msn}&_HLS_skip=YES")
        delta = parse(text.decode())
        full = parse((await get(api, media))[1].decode())
        assert delta.skipped >= 1 and delta.segments[-1].msn >= full.segments[-1].msn - 1
        assert delta.skipped + len(delta.segments) >= len(full.segments)
        # The end: every playlist gets EXT-X-ENDLIST and keeps being served for a while.
        status, _, _ = await api.call("DELETE", headers["Location"], token=token)
        assert status == 200
        await peer.close()
        for _ in range(100):
            _, text, head = await get(api, media)
            if parse(text.decode()).ended:
                break
            await asyncio.sleep(0.1)
        ended = validator.check(text.decode())
        assert ended.ended and ended.preload_hint is None and head["Cache-Control"] == "public, max-age=60"
        # The whole window of the ended stream plays through ffmpeg without a decoding error.
        out = await run("ffmpeg", "-v", "error", "-i", str(client.make_url(media)), "-fps_mode", "passthrough",
                        "-f", "null", "-")
        assert out.returncode == 0 and out.stderr.strip() == "", out.stderr


async def test_the_ladder_runs_while_hls_is_asked_for_and_stops_when_nobody_asks(
    app_factory: Callable[..., web.Application], clock: FakeClock
) -> None:
    app = app_factory(webrtc_host_addresses=["127.0.0.1"], publisher_timeout=3.0, hls_idle_seconds=1.0,
                      hls_ladder="source")
    async with TestClient(TestServer(app)) as client:
        api = Api(client, app[SERVICES], clock)
        name, token, peer, _ = await live_channel(api)
        status, body, _ = await get(api, f"/hls/{name}/index.m3u8")
        assert status == 200, body
        media = f"/hls/{name}/{variants(body.decode())[0][1]}"
        first = api.services.hls.live(name)
        assert first is not None
        for _ in range(10):  # a viewer reloading for 3 s (three idle periods) keeps it running
            status, text, _ = await get(api, media)
            assert status == 200, (media, text)
            await asyncio.sleep(0.3)
        assert api.services.hls.live(name) is first and not first.ended
        for _ in range(60):  # nobody asks: it stops within an idle period and a sweep
            if api.services.hls.live(name) is None:
                break
            await asyncio.sleep(0.1)
        assert api.services.hls.live(name) is None and first.ended
        # The next viewer starts it again, for the same live stream.
        status, body, _ = await get(api, f"/hls/{name}/index.m3u8")
        assert status == 200, body
        again = api.services.hls.live(name)
        assert again is not None and again is not first and again.stream == first.stream
        # Under new URLs: the first ladder's media was served as immutable and must not be shadowed.
        media_again = f"/hls/{name}/{variants(body.decode())[0][1]}"
        assert media_again != media
        status, text, _ = await get(api, media_again)
        assert status == 200 and parse(text.decode()).segments
        assert (await get(api, media))[0] == 404
        await peer.close()
