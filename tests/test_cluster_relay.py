"""A stream spans nodes: when its origin is full, a viewer is placed on another node, which relays it.

A `tally serve --media off` front door and two `tally node`s (each gathering on its own loopback
address, as separate hosts would), one PostgreSQL and a private Redis, as separate processes; each
node takes one viewer (`MAX_VIEWERS_PER_NODE=1`). Real aiortc peers publish and watch.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from http_client import Client
from redis_server import redis_server
from server_process import serve
from test_chat import DcClient, WsClient
from test_cluster_media import ADDRESSES, _node_of, _post
from webrtc_peer import Peer

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


async def test_a_full_origin_relays_to_another_node_and_the_whole_audience_counts(tmp_path: Path,
                                                                                 database_url: str) -> None:
    with redis_server(tmp_path) as redis:
        common = {"BUS_URL": redis.url, "DATABASE_URL": database_url, "AUTO_MIGRATE": "false",
                  "JWT_SECRET": secrets.token_hex(32), "LOG_LEVEL": "INFO", "MAX_VIEWERS_PER_NODE": "1",
                  "RELAY_LINGER_SECONDS": "2"}
        for name in ("door", "node1", "node2"):
            (tmp_path / name).mkdir()
        with serve(tmp_path / "node1", ("node",), NODE_ID="node-1", WEBRTC_HOST_ADDRESSES=ADDRESSES["node-1"],
                   **common), \
                serve(tmp_path / "node2", ("node",), NODE_ID="node-2", WEBRTC_HOST_ADDRESSES=ADDRESSES["node-2"],
                      **common), \
                serve(tmp_path / "door", ("serve", "--media", "off"), NODE_ID="door-1", **common) as door:
            async with aiohttp.ClientSession() as http:
                client = Client(http, door.url)
                admin = await client.admin("boss")
                key = await client.broadcaster("caster")
                chatty = await _sign_in(client, "chatty")
                publisher, direct, relayed = Peer.publisher("h264", audio=True), Peer.viewer(), Peer.viewer()
                chat = DcClient(relayed.pc.createDataChannel("chat"))
                socket = None
                try:
                    origin = _node_of(await _post(client, publisher, "/whip/caster", key))
                    edge = next(n for n in ADDRESSES if n != origin)
                    assert _node_of(await _post(client, direct, "/whep/caster", None)) == origin
                    await direct.wait_frames(10)

                    # The origin is full: the next viewer goes to the other node, which relays the stream.
                    session = await _post(client, relayed, "/whep/caster", chatty)
                    assert _node_of(session) == edge
                    assert f" {ADDRESSES[edge]} " in session["answer"]  # media flows from the edge node
                    await relayed.wait_frames(30, timeout=15)
                    nodes = await _until_cluster(client, admin, lambda n: n[edge]["load"]["relays"] == 1
                                                 and n[edge]["load"]["viewers"] == 1)
                    assert nodes[edge]["streams"][0]["relay_from"] == origin
                    assert nodes[edge]["streams"][0]["viewers"] == 1
                    assert nodes[origin]["streams"][0]["relay_from"] == "" and nodes[origin]["load"]["publishers"] == 1
                    assert nodes[edge]["load"]["publishers"] == 0

                    # Both viewers count, wherever they watch.
                    await _until_viewers(client, 2)

                    # Chat: the viewer's data channel on the relay node and a WebSocket on the door are one
                    # conversation.
                    await chat.of_type("welcome", timeout=10)
                    socket = WsClient(await http.ws_connect(door.url + "/ws?channel=caster"))
                    await socket.of_type("welcome")
                    await socket.send({"type": "auth", "token": admin})
                    await socket.expect(lambda f: f["type"] == "you" and f["username"] == "boss")
                    chat.channel.send(json.dumps({"type": "send", "text": "from the relay node", "nonce": "r1"}))
                    await socket.of_type("message", text="from the relay node")
                    assert (await socket.post("to the relay node", "w1"))["type"] == "ack"
                    await chat.of_type("message", text="to the relay node")

                    # Every node is full now: a third viewer is told to come back later.
                    third = Peer.viewer()
                    try:
                        async with http.post(door.url + "/whep/caster", data=await third.offer(),
                                             headers={"Content-Type": "application/sdp"}) as response:
                            assert response.status == 503, await response.text()
                            assert int(response.headers["Retry-After"]) > 0
                    finally:
                        await third.close()

                    # The relayed viewer leaves: the relay lingers a moment, then ends; the stream goes on.
                    assert (await client.call("DELETE", session["location"]))[0] == 200
                    await _until_cluster(client, admin, lambda n: not n[edge]["streams"], timeout=15)
                    await _until_viewers(client, 1)
                    frames = direct.frames
                    await asyncio.sleep(1)
                    assert direct.frames > frames  # the origin's own viewer never noticed
                finally:
                    if socket is not None:
                        await socket.close()
                    for peer in (publisher, direct, relayed):
                        await peer.close()
        logs = "".join((tmp_path / name / "server.log").read_text() for name in ("door", "node1", "node2"))
    assert "Traceback" not in logs, logs[-5000:]


async def _sign_in(client: Client, name: str) -> str:
    await client.broadcaster(name)
    status, login = await client.call("POST", "/api/auth/login", {"username": name, "password": "correct horse"})
    assert status == 200, login
    return str(login["access_token"])


async def _until_cluster(client: Client, admin: str, condition: Any, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await client.call("GET", "/api/cluster", token=admin)
        assert status == 200, body
        nodes = {n["id"]: n for n in body["nodes"]}
        if len(nodes) == 2 and condition(nodes):
            return nodes
        assert time.monotonic() < deadline, nodes
        await asyncio.sleep(0.2)


async def _until_viewers(client: Client, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await client.call("GET", "/api/channels/caster")
        assert status == 200, body
        if body["viewer_count"] == count:
            return
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.2)
