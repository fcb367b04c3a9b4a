"""The HLS/DASH relay of a front door (signaling/hls/relay.py) against a real origin over TCP: every
byte of an answer that arrives in several pieces is passed on, and an answer that breaks off is a 503
nobody caches, never a short 200."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cluster.memory import MemoryRegistry
from cluster.registry import NodeRecord
from signaling.api.problems import problems_middleware
from signaling.cluster.directory import NodeDirectory
from signaling.hls.relay import HlsRelay

PART = bytes(range(256)) * 400  # 100 KiB: more than a connection's first flight of packets


async def in_pieces(request: web.Request) -> web.StreamResponse:
    """A part sent as an origin under load sends it: half, a pause, the rest."""
    response = web.StreamResponse(headers={"Content-Type": "video/mp4", "Cache-Control": "public, max-age=31536000"})
    response.content_length = len(PART)
    await response.prepare(request)
    await response.write(PART[: len(PART) // 2])
    await asyncio.sleep(0.05)
    await response.write(PART[len(PART) // 2:])
    return response


async def broken_off(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "video/mp4", "Cache-Control": "public, max-age=31536000"})
    response.content_length = len(PART)
    await response.prepare(request)
    await response.write(PART[: len(PART) // 2])
    await asyncio.sleep(0.05)
    assert request.transport is not None
    request.transport.close()  # the origin died mid-answer
    return response


@pytest.fixture
async def door() -> AsyncIterator[str]:
    origin_app = web.Application()
    origin_app.router.add_get("/hls/chan/part.m4s", in_pieces)
    origin_app.router.add_get("/hls/chan/broken.m4s", broken_off)
    async with TestServer(origin_app, host="127.0.0.1") as origin:
        registry = MemoryRegistry()
        await registry.announce(NodeRecord(id="origin", http_url=str(origin.make_url("")).rstrip("/"), hls=("chan",)))
        relay = HlsRelay(NodeDirectory(registry), "door")

        async def forward(request: web.Request) -> web.StreamResponse:
            answer = await relay.forward(request, "chan")
            assert answer is not None
            return answer

        door_app = web.Application(middlewares=[problems_middleware])  # AppError -> problem details, as in the app
        door_app.router.add_get("/hls/chan/{name}", forward)
        door_app.on_cleanup.append(lambda _: relay.close())
        async with TestServer(door_app, host="127.0.0.1") as server:
            yield str(server.make_url("")).rstrip("/")


async def test_an_answer_in_pieces_is_passed_on_whole(door: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(3):  # new and reused connections to the origin
            async with http.get(door + "/hls/chan/part.m4s") as response:
                assert response.status == 200
                assert await response.read() == PART
                assert response.headers["Cache-Control"] == "public, max-age=31536000"


async def test_an_answer_that_breaks_off_is_a_503_nobody_caches(door: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(door + "/hls/chan/broken.m4s") as response:
            assert response.status == 503
            assert response.headers["Cache-Control"] == "no-store"
            assert response.headers["Retry-After"] == "1"
