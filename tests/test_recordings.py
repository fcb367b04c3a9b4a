"""Recording against the real server and SFU with real aiortc publishers on loopback: the MP4 checked
with ffprobe/ffmpeg, file:// storage served with ranges, the recordings API and its bad input, and
retention. (S3 is in test_recordings_s3.py, a killed process in test_recordings_crash.py, Chromium in
tests/browser/test_recording_pages.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from media_probe import decode_errors, moov_before_mdat, probe
from signaling.app import SERVICES
from support import Api, FakeClock
from test_whip_whep import go_live, stream_key, until


@pytest.fixture
async def rec(app_factory: Callable[..., web.Application], clock: FakeClock) -> AsyncIterator[Api]:
    app = app_factory(webrtc_host_addresses=["127.0.0.1"], publisher_timeout=3.0, live_thumbnail_interval=0.5)
    async with TestClient(TestServer(app)) as client:
        yield Api(client, app[SERVICES], clock)


async def wait_state(api: Api, recording_id: int, state: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, body, _ = await api.call("GET", f"/api/recordings/{recording_id}")
        assert status == 200, body
        if body["state"] == state:
            return dict(body)
        assert body["state"] != "failed", body
        assert asyncio.get_running_loop().time() < deadline, f"still {body['state']}"
        await asyncio.sleep(0.2)


async def record(api: Api, codec: str, seconds: float) -> tuple[str, str, dict[str, Any], float]:
    """A channel with recording on, live for `seconds` with video and audio, then ended by DELETE."""
    name, token = await api.user()
    status, body, _ = await api.call("PATCH", f"/api/channels/{name}", {"record_streams": True}, token=token)
    assert status == 200 and body["record_streams"] is True, body
    peer, headers = await go_live(api, name, await stream_key(api, token), codec=codec, audio=True)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.sleep(seconds)
    status, _, _ = await api.call("DELETE", headers["Location"], token=token)
    published = loop.time() - started
    await peer.close()
    assert status == 200
    status, listing, _ = await api.call("GET", f"/api/channels/{name}/recordings")
    assert status == 200 and len(listing["items"]) == 1, listing
    return name, token, listing["items"][0], published


def local(url: str) -> str:
    """The path of one of the server's own URLs (tests reach it on loopback, not its public name)."""
    return URL(url).path_qs


async def download(api: Api, url: str, target: Path) -> Path:
    async with api.client.get(local(url)) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == "video/mp4"
        target.write_bytes(await response.read())
    return target


async def test_an_h264_stream_is_recorded_to_a_faststart_mp4_without_transcoding(rec: Api, tmp_path: Path) -> None:
    name, _, item, published = await record(rec, "h264", 6.0)
    assert item["state"] in ("recording", "processing", "ready") and item["channel"] == name
    ready = await wait_state(rec, item["id"], "ready")
    assert ready["video_codec"] == "h264" and ready["audio_codec"] == "opus"
    assert (ready["width"], ready["height"]) == (640, 360)
    assert ready["size"] > 10_000 and ready["thumbnail_url"] and ready["page_url"].endswith(f"/recordings/{item['id']}")
    path = await download(rec, ready["playback_url"], tmp_path / "r.mp4")
    assert path.stat().st_size == ready["size"]
    info = probe(path)
    assert info.codec("video") == "h264" and info.codec("audio") == "opus"
    # It starts at the first keyframe the recorder got, so it may be a little shorter than the session.
    assert published - 1.2 < info.duration <= published + 0.2, (info.duration, published)
    assert abs(info.duration - ready["duration"]) < 0.1
    assert abs(info.start("video") - info.start("audio")) < 0.1
    assert decode_errors(path) == ""
    assert moov_before_mdat(path)
    # HTTP ranges, so a player can seek.
    async with rec.client.get(local(ready["playback_url"]), headers={"Range": "bytes=100-199"}) as response:
        assert response.status == 206 and len(await response.read()) == 100
    async with rec.client.get(local(ready["thumbnail_url"])) as response:
        assert response.status == 200 and (await response.read())[:2] == b"\xff\xd8"


async def test_a_vp8_stream_is_transcoded_once_to_h264(rec: Api, tmp_path: Path) -> None:
    _, _, item, published = await record(rec, "vp8", 4.0)
    ready = await wait_state(rec, item["id"], "ready")
    assert ready["video_codec"] == "h264"
    info = probe(await download(rec, ready["playback_url"], tmp_path / "r.mp4"))
    assert info.codec("video") == "h264" and info.codec("audio") == "opus"
    assert published - 1.2 < info.duration <= published + 0.2
    assert decode_errors(tmp_path / "r.mp4") == ""


async def test_recording_starts_and_stops_on_demand_while_live(rec: Api, tmp_path: Path) -> None:
    name, token = await rec.user()
    peer, headers = await go_live(rec, name, await stream_key(rec, token), audio=True)
    await asyncio.sleep(1.0)
    status, body, _ = await rec.call("PUT", f"/api/channels/{name}/recording", {"active": True}, token=token)
    assert status == 200 and body["active"] is True and body["recording"]["state"] == "recording", body
    first = body["recording"]["id"]
    status, again, _ = await rec.call("PUT", f"/api/channels/{name}/recording", {"active": True}, token=token)
    assert status == 200 and again["recording"]["id"] == first  # idempotent
    await asyncio.sleep(3.0)
    status, body, _ = await rec.call("PUT", f"/api/channels/{name}/recording", {"active": False}, token=token)
    assert status == 200 and body["active"] is False and body["recording"]["state"] == "processing", body
    ready = await wait_state(rec, first, "ready")
    assert 2.0 < ready["duration"] < 3.5
    # The live thumbnail exists while live, and goes when the stream ends.
    async with rec.client.get(f"/api/channels/{name}/thumbnail.jpg") as response:
        assert response.status == 200 and (await response.read())[:2] == b"\xff\xd8"
    await rec.call("DELETE", headers["Location"], token=token)
    await peer.close()
    await until(lambda: _gone(rec, f"/api/channels/{name}/thumbnail.jpg"))


async def _gone(api: Api, path: str) -> bool:
    status, _, _ = await api.call("GET", path)
    return status == 404


async def test_recordings_api_refuses_bad_input_and_strangers(rec: Api) -> None:
    name, token, item, _ = await record(rec, "h264", 2.5)
    other, other_token = await rec.user()
    ready = await wait_state(rec, item["id"], "ready")
    for path in ("/api/recordings/999999", "/api/recordings/abc", "/api/recordings/-1", "/api/recordings/99999999999",
                 "/api/recordings/999999/media", "/api/recordings/999999/thumbnail.jpg", "/api/channels/nobody/recordings"):
        status, body, headers = await rec.call("GET", path)
        assert status == 404 and headers["Content-Type"].startswith("application/problem+json"), (path, body)
    for query in ("limit=0", "limit=1000", "before=x", "before=-3"):
        status, body, _ = await rec.call("GET", f"/api/channels/{name}/recordings?{query}")
        assert status == 422, (query, body)
    # Someone else's recording and channel.
    status, _, _ = await rec.call("DELETE", f"/api/recordings/{ready['id']}", token=other_token)
    assert status == 403
    status, _, _ = await rec.call("DELETE", f"/api/recordings/{ready['id']}")
    assert status == 401
    status, _, _ = await rec.call("PUT", f"/api/channels/{name}/recording", {"active": True}, token=other_token)
    assert status == 403
    for body in ({}, {"active": "yes"}, {"active": True, "x": 1}, []):
        status, _, _ = await rec.call("PUT", f"/api/channels/{name}/recording", body, token=token)
        assert status == 422, body
    status, problem, _ = await rec.call("PUT", f"/api/channels/{name}/recording", {"active": True}, token=token)
    assert status == 409 and "not live" in problem["detail"]  # recording needs a stream
    for bad in ({"recording_retention_days": -1}, {"recording_retention_days": "7"}, {"record_streams": "on"}):
        status, _, _ = await rec.call("PATCH", f"/api/channels/{name}", bad, token=token)
        assert status == 422, bad
    # Deleting removes the row and the files; deleting twice is a 404.
    media = rec.services.recordings.storage.local_path(f"recordings/{name}/{ready['id']}/recording.mp4")
    assert media is not None and media.exists()
    status, _, _ = await rec.call("DELETE", f"/api/recordings/{ready['id']}", token=token)
    assert status == 204
    assert not media.exists()
    status, _, _ = await rec.call("DELETE", f"/api/recordings/{ready['id']}", token=token)
    assert status == 404
    status, listing, _ = await rec.call("GET", f"/api/channels/{name}/recordings")
    assert listing["items"] == []


async def test_retention_deletes_old_recordings_of_channels_that_ask(rec: Api, clock: FakeClock) -> None:
    name, token, item, _ = await record(rec, "h264", 2.0)
    await wait_state(rec, item["id"], "ready")
    service = rec.services.recordings
    clock.advance(40 * 86400)
    assert await service.sweep_retention() == 0  # retention 0 keeps everything
    clock.advance(-40 * 86400)
    status, _, _ = await rec.call("PATCH", f"/api/channels/{name}", {"recording_retention_days": 30}, token=token)
    assert status == 200
    assert await service.sweep_retention() == 0  # not 30 days old yet
    clock.advance(31 * 86400)
    assert await service.sweep_retention() == 1
    media = service.storage.local_path(f"recordings/{name}/{item['id']}/recording.mp4")
    assert media is not None and not media.exists()
    status, _, _ = await rec.call("GET", f"/api/recordings/{item['id']}")
    assert status == 404
