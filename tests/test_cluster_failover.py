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


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_when_the_origin_dies_its_relays_carry_on_and_their_viewers_keep_their_sessions(
        tmp_path: Path, database_url: str) -> None:
    """Three nodes, each taking one viewer: the origin's viewer on it, two more on relays. The origin
    dies: the publisher goes live again on one of the relays' nodes (its viewer stays, now at the
    origin), the other relay follows the stream there, and neither relayed viewer needs a new session."""
    addresses = {**ADDRESSES, "node-3": "127.0.0.4"}
    with redis_server(tmp_path) as redis:
        common = {"BUS_URL": redis.url, "DATABASE_URL": database_url, "AUTO_MIGRATE": "false",
                  "JWT_SECRET": secrets.token_hex(32), "LOG_LEVEL": "INFO", "MAX_VIEWERS_PER_NODE": "1"}
        for name in ("door", *addresses):
            (tmp_path / name).mkdir()
        with serve(tmp_path / "node-1", ("node",), NODE_ID="node-1", WEBRTC_HOST_ADDRESSES=addresses["node-1"],
                   **common) as node1, \
                serve(tmp_path / "node-2", ("node",), NODE_ID="node-2", WEBRTC_HOST_ADDRESSES=addresses["node-2"],
                      **common) as node2, \
                serve(tmp_path / "node-3", ("node",), NODE_ID="node-3", WEBRTC_HOST_ADDRESSES=addresses["node-3"],
                      **common) as node3, \
                serve(tmp_path / "door", ("serve", "--media", "off"), NODE_ID="door", **common) as door_process:
            nodes: dict[str, ServerProcess] = {"node-1": node1, "node-2": node2, "node-3": node3}
            async with aiohttp.ClientSession() as http:
                door = Client(http, door_process.url)
                await door.admin("boss")
                key = await door.broadcaster("caster")
                publisher, viewers = Peer.publisher("h264", audio=True), [Peer.viewer() for _ in range(3)]
                peers = [publisher, *viewers]
                try:
                    origin = await connect(door, publisher, "/whip/caster", key, time.monotonic() + 15)
                    placed = [await connect(door, viewer, "/whep/caster", None, time.monotonic() + 15)
                              for viewer in viewers]
                    assert placed[0] == origin and sorted(placed) == sorted(addresses), placed
                    for viewer in viewers:
                        await viewer.wait_frames(10)

                    nodes[origin].kill()
                    killed = time.monotonic()
                    relayed = viewers[1:]
                    frames = [viewer.frames for viewer in relayed]
                    again = Peer.publisher("h264", audio=True)
                    peers.append(again)
                    new_origin = await connect(door, again, "/whip/caster", key, killed + 5)
                    assert new_origin in placed[1:]  # a node with the stream's viewers took its publisher
                    for viewer, before in zip(relayed, frames):
                        await viewer.wait_frames(before + 5, timeout=max(0.1, killed + 5 - time.monotonic()))
                    back = time.monotonic() - killed
                    print(f"FAILOVER origin {origin} killed: relayed viewers decoding again after {back:.2f} s, "
                          f"the stream now published on {new_origin}")
                    status, body = await door.call("GET", "/api/cluster", token=await _token(door))
                    streams = {n["id"]: n["streams"] for n in body["nodes"]}
                    other = next(n for n in placed[1:] if n != new_origin)
                    assert streams[new_origin][0]["relay_from"] == ""
                    deadline = time.monotonic() + 5
                    while streams[other][0]["relay_from"] != new_origin:  # the other relay followed it
                        assert time.monotonic() < deadline, streams
                        await asyncio.sleep(0.2)
                        status, body = await door.call("GET", "/api/cluster", token=await _token(door))
                        streams = {n["id"]: n["streams"] for n in body["nodes"]}
                finally:
                    for peer in peers:
                        await peer.close()
        logs = "".join((tmp_path / name / "server.log").read_text() for name in ("door", *addresses) if name != origin)
    assert "Traceback" not in logs, logs[-5000:]


async def _token(door: Client) -> str:
    status, login = await door.call("POST", "/api/auth/login", {"username": "boss", "password": "correct horse"})
    return str(login["access_token"])
