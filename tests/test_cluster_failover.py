"""The origin node dies (SIGKILL): the publisher goes live again through the same front door, on
another node, and its viewer watches again, within five seconds of the kill.

A front door, two `tally node`s on their own loopback addresses, PostgreSQL and a private Redis, as
separate processes; the publisher and viewer are real WebRTC peers (aiortc) that retry as the studio
and the watch page do.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import aiohttp
import pytest

from http_client import SDP, Client
from redis_server import redis_server
from server_process import ServerProcess, serve
from webrtc_peer import Peer

ADDRESSES = {"node-1": "127.0.0.2", "node-2": "127.0.0.3"}


async def connect(door: Client, peer: Peer, path: str, token: str | None, deadline: float) -> str:
    """POST the peer's offer until a node takes it (503 and 409 are tried again, as clients do); the node."""
    headers = {"Content-Type": SDP, **({"Authorization": f"Bearer {token}"} if token else {})}
    offer = await peer.offer()
    while True:
        async with door.http.post(door.url + path, data=offer, headers=headers) as response:
            text = await response.text()
            if response.status == 201:
                await peer.answer(text)
                return response.headers["Location"].rsplit("/", 1)[1].split(".", 1)[0]
            assert response.status in (409, 503), text
        assert time.monotonic() < deadline, f"{path}: still {response.status}: {text}"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_when_the_origin_dies_the_stream_and_its_viewer_are_back_within_five_seconds(
        tmp_path: Path, database_url: str) -> None:
    with redis_server(tmp_path) as redis:
        common = {"BUS_URL": redis.url, "DATABASE_URL": database_url, "AUTO_MIGRATE": "false",
                  "JWT_SECRET": secrets.token_hex(32), "LOG_LEVEL": "INFO"}
        for name in ("door", *ADDRESSES):
            (tmp_path / name).mkdir()
        with serve(tmp_path / "node-1", ("node",), NODE_ID="node-1", WEBRTC_HOST_ADDRESSES=ADDRESSES["node-1"],
                   **common) as node1, \
                serve(tmp_path / "node-2", ("node",), NODE_ID="node-2", WEBRTC_HOST_ADDRESSES=ADDRESSES["node-2"],
                      **common) as node2, \
                serve(tmp_path / "door", ("serve", "--media", "off"), NODE_ID="door", **common) as door_process:
            nodes: dict[str, ServerProcess] = {"node-1": node1, "node-2": node2}
            async with aiohttp.ClientSession() as http:
                door = Client(http, door_process.url)
                await door.admin("boss")
                key = await door.broadcaster("caster")
                peers = [Peer.publisher("h264", audio=True), Peer.viewer()]
                try:
                    origin = await connect(door, peers[0], "/whip/caster", key, time.monotonic() + 15)
                    assert await connect(door, peers[1], "/whep/caster", None, time.monotonic() + 15) == origin
                    await peers[1].wait_frames(10)

                    nodes[origin].kill()
                    killed = time.monotonic()
                    publisher, viewer = Peer.publisher("h264", audio=True), Peer.viewer()
                    peers += [publisher, viewer]
                    again = await connect(door, publisher, "/whip/caster", key, killed + 5)
                    assert again != origin
                    assert await connect(door, viewer, "/whep/caster", None, killed + 5) == again
                    await viewer.wait_frames(1, timeout=max(0.1, killed + 5 - time.monotonic()))
                    back = time.monotonic() - killed
                    print(f"FAILOVER origin {origin} killed: viewer decoding again on {again} after {back:.2f} s")
                    await viewer.wait_frames(15)
                    assert await _streams(database_url) == [("ended", f"continued on node {again}"), ("live", "")]

                    # The second origin dies too, and its publisher does not come back: the cluster ends
                    # the stream it left open (the channel is offline again) once the node is surely gone.
                    nodes[again].kill()
                    killed = time.monotonic()
                    while (await door.call("GET", "/api/channels/caster"))[1]["is_live"]:
                        assert time.monotonic() - killed < 20, "the lost node's stream stayed live"
                        await asyncio.sleep(0.25)
                    assert (await _streams(database_url))[-1] == ("ended", f"node {again} lost")
                finally:
                    for peer in peers:
                        await peer.close()


async def _streams(database_url: str) -> list[tuple[str, str]]:
    """The channel's streams, oldest first: ("live" or "ended", why it ended)."""
    import asyncpg

    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await connection.fetch("SELECT ended_at, end_reason FROM stream_sessions ORDER BY started_at")
    finally:
        await connection.close()
    return [("ended" if row["ended_at"] else "live", row["end_reason"] or "") for row in rows]
