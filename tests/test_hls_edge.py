"""The nginx edge of infra/cdn in front of the real origin on loopback: many LL-HLS clients cost the
origin about one request per object, blocking playlist reloads work through it, and a DASH segment
being made reaches the player chunk by chunk through it."""

from __future__ import annotations

import asyncio
import shutil
import time
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dash_checker import LiveMpdChecker, fragments
from hls_validator import parse
from nginx_process import infra_module, nginx_binary
from signaling.app import SERVICES
from support import Api, FakeClock, free_port
from test_hls import live_channel, variants

pytestmark = [
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
    pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(), reason="needs nginx"),
]

render = infra_module("cdn/render.py").render


@pytest.fixture
async def origin(app_factory: Callable[..., web.Application], clock: FakeClock) -> AsyncIterator[Api]:
    app = app_factory(webrtc_host_addresses=["127.0.0.1"], publisher_timeout=3.0)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Api(client, app[SERVICES], clock)


@pytest.fixture
async def edge(origin: Api, tmp_path: Path) -> AsyncIterator[str]:
    port = free_port()
    conf = render(f"127.0.0.1:{origin.client.port}", f"127.0.0.1:{port}", tmp_path / "edge", workers="1",
                  cache_size="256m", user="root")
    nginx = nginx_binary()
    process = subprocess.Popen([nginx, "-p", str(conf.parent), "-c", str(conf), "-g", "daemon off;"],
                               stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(url + "/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"nginx did not start: {process.stderr.read() if process.stderr else ''!r}")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def origin_count(api: Api, kind: str) -> float:
    value = api.services.metrics.registry.get_sample_value("tally_hls_requests_total", {"object": kind})
    return value or 0.0


async def ll_client(session: aiohttp.ClientSession, media: str, seconds: float, parts: set[str],
                    queries: set[str]) -> int:
    """Follows a rendition as an LL-HLS player does: blocking reloads for the next part, then the parts."""
    folder = media.rsplit("/", 1)[0] + "/"
    fetched: set[str] = set()
    async with session.get(media) as response:
        assert response.status == 200
        playlist = parse(await response.text())
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        listed = [part["URI"] for s in playlist.segments for part in s.parts] + [p["URI"] for p in playlist.pending_parts]
        for uri in listed[-3:]:
            if uri not in fetched:
                async with session.get(folder + uri) as response:
                    assert response.status == 200, uri
                    await response.read()
                fetched.add(uri)
                parts.add(uri)
        msn = playlist.segments[-1].msn + 1
        query = f"_HLS_msn={msn}&_HLS_part={len(playlist.pending_parts)}"
        queries.add(query)
        async with session.get(f"{media}?{query}") as response:
            assert response.status == 200, await response.text()
            playlist = parse(await response.text())
    return len(fetched)


async def test_fifty_ll_hls_clients_through_the_edge_cost_the_origin_one_request_per_object(
    origin: Api, edge: str
) -> None:
    name, token, peer, _ = await live_channel(origin)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async with session.get(f"{edge}/hls/{name}/index.m3u8") as response:
            assert response.status == 200
            uri = variants(await response.text())[0][1]
        media = f"{edge}/hls/{name}/{uri}"
        # A blocking reload through the edge answers when the part is there, and carries it.
        async with session.get(media) as response:
            first = parse(await response.text())
        msn, part = first.segments[-1].msn + 1, len(first.pending_parts)
        started = asyncio.get_running_loop().time()
        async with session.get(f"{media}?_HLS_msn={msn}&_HLS_part={part}") as response:
            assert response.status == 200
            held = parse(await response.text())
        assert asyncio.get_running_loop().time() - started < 2.0
        assert held.segments[-1].msn >= msn or len(held.pending_parts) > part
        before = {kind: origin_count(origin, kind) for kind in ("part", "playlist")}
        parts: set[str] = set()
        queries: set[str] = set()
        fetched = await asyncio.gather(*(ll_client(session, media, 6.0, parts, queries) for _ in range(50)))
        async with session.get(media) as response:
            assert response.headers["X-Cache"] in ("HIT", "MISS", "EXPIRED", "UPDATING", "STALE")
    await peer.close()
    part_requests = origin_count(origin, "part") - before["part"]
    playlist_requests = origin_count(origin, "playlist") - before["playlist"]
    assert min(fetched) >= 10  # every client followed the stream
    # Roughly one origin request per object, however many clients asked.
    assert part_requests <= len(parts) * 1.25 + 2, (part_requests, len(parts))
    assert playlist_requests <= (len(queries) + 1) * 1.5 + 4, (playlist_requests, len(queries))
    print(f"\n50 clients: {sum(fetched)} part fetches, {len(parts)} distinct parts, {part_requests:.0f} at the origin; "
          f"{len(queries)} distinct blocking reloads, {playlist_requests:.0f} playlist requests at the origin")


async def test_a_dash_segment_being_made_reaches_the_player_through_the_edge_chunk_by_chunk(
    origin: Api, edge: str
) -> None:
    name, token, peer, _ = await live_channel(origin)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async with session.get(f"{edge}/dash/{name}/manifest.mpd") as response:
            assert response.status == 200
            mpd = LiveMpdChecker().check(await response.text())
        track = mpd.tracks[0]
        streamed = 0
        for _ in range(3):
            # The newest segment, asked for when the MPD makes it available: a part after it starts.
            number = mpd.available(time.time(), track)[-1]
            while mpd.available(time.time(), track)[-1] == number:
                await asyncio.sleep(0.02)
            number += 1
            # Two players ask for it at once: each gets its chunks as they are made (neither waits for
            # the other's answer to end, as a cache lock would make it).
            answers = await asyncio.gather(*(timed(session, f"{edge}/dash/{name}/{track.url(number)}")
                                             for _ in range(4)))
            for body, arrivals, status in answers:
                assert status == "MISS", status
                # The first chunks came at once, the last with the segment's end: not all at the end.
                assert fragments(body) >= 5 and arrivals[0] < 0.6 and arrivals[-1] - arrivals[0] > 0.8, arrivals
            # Nobody waited on another's answer (a cache lock makes the others look again half a second on).
            firsts = sorted(arrivals[0] for _, arrivals, _ in answers)
            assert firsts[-1] - firsts[0] < 0.3, firsts
            first = answers[0]
            assert all(body == first[0] for body, _, _ in answers)
            body = first[0]
            streamed += 1
            # Once complete, the segment is cached: the next player of it gets it from the edge.
            async with session.get(f"{edge}/dash/{name}/{track.url(number)}") as response:
                assert await response.read() == body
                cached = response.headers["X-Cache"]
            async with session.get(f"{edge}/dash/{name}/{track.url(number)}") as response:
                assert await response.read() == body and response.headers["X-Cache"] == "HIT", cached
        assert streamed == 3
        async with session.get(f"{edge}/dash/time") as response:
            assert response.status == 200 and "T" in await response.text()
    await peer.close()


async def timed(session: aiohttp.ClientSession, url: str) -> tuple[bytes, list[float], str]:
    """The body, when each chunk of it arrived (seconds after asking), and the edge's X-Cache."""
    asked = time.monotonic()
    arrivals = []
    body = b""
    async with session.get(url) as response:
        assert response.status == 200
        async for chunk in response.content.iter_any():
            arrivals.append(time.monotonic() - asked)
            body += chunk
        return body, arrivals, response.headers["X-Cache"]
