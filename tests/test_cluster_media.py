"""Front doors without media send WHIP/WHEP sessions to the cluster's media nodes.

Two `tally serve --media off` front doors and two `tally node`s (each gathering on its own loopback
address, as separate hosts would), all on one PostgreSQL and a private Redis, as separate processes.
A real publisher (aiortc) goes live through one front door and a real viewer watches through the other;
the session URLs name the node, so PATCH and DELETE work through either front door.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import aiohttp
import pytest

from http_client import SDP, Client
from redis_server import redis_server
from server_process import serve
from webrtc_peer import Peer

FRAGMENT = "application/trickle-ice-sdpfrag"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_front_doors_place_sessions_on_nodes_and_any_door_reaches_them(tmp_path: Path,
                                                                            database_url: str) -> None:
    with redis_server(tmp_path) as redis:
        common = {"BUS_URL": redis.url, "DATABASE_URL": database_url, "AUTO_MIGRATE": "false",
                  "JWT_SECRET": secrets.token_hex(32), "LOG_LEVEL": "INFO"}
        for name in ("door1", "door2", "node1", "node2"):
            (tmp_path / name).mkdir()
        with serve(tmp_path / "node1", NODE_ID="node-1", WEBRTC_HOST_ADDRESSES="127.0.0.2", **common) as node1, \
                serve(tmp_path / "node2", NODE_ID="node-2", WEBRTC_HOST_ADDRESSES="127.0.0.3", **common), \
                serve(tmp_path / "door1", MEDIA="false", NODE_ID="door-1", **common) as door1, \
                serve(tmp_path / "door2", MEDIA="false", NODE_ID="door-2", **common) as door2:
            async with aiohttp.ClientSession() as http:
                await _through_two_doors(Client(http, door1.url), Client(http, door2.url))
        log = node1.log.read_text() + (tmp_path / "door1" / "server.log").read_text()
    assert "Traceback" not in log, log[-5000:]


async def _through_two_doors(one: Client, two: Client) -> None:
    admin = await one.admin("boss")
    status, body = await one.call("GET", "/api/cluster", token=admin)
    assert status == 200 and [n["id"] for n in body["nodes"]] == ["node-1", "node-2"]  # doors are not nodes
    key = await two.broadcaster("caster")

    publisher, viewer = Peer.publisher("h264", audio=True), Peer.viewer()
    try:
        whip = await _post(one, publisher, "/whip/caster", key)
        origin = _node_of(whip)
        assert origin in ("node-1", "node-2")
        address = {"node-1": "127.0.0.2", "node-2": "127.0.0.3"}[origin]
        assert f" {address} " in whip["answer"] and "127.0.0.1" not in whip["answer"]  # media straight to the node

        whep = await _post(two, viewer, "/whep/caster", None)  # the other door; placed where the stream is
        assert _node_of(whep) == origin
        await viewer.wait_frames(15)

        # The viewer's session, created through door two, trickled and ended through door one.
        status, _ = await _patch(one, whep["location"], whep["etag"], "a=end-of-candidates\r\n")
        assert status == 204
        status, _ = await _patch(one, whep["location"], '"stale"', "a=end-of-candidates\r\n")
        assert status == 412
        status, _ = await one.call("DELETE", whep["location"])
        assert status == 200
        status, _ = await two.call("DELETE", whep["location"])
        assert status == 404  # gone for every door
        status, _ = await one.call("DELETE", whep["location"].replace("/whep/", "/whip/"))
        assert status == 404  # a viewer's session is not a publisher's
        forged = whep["location"].rsplit("/", 1)[0] + "/no-such-node.abc"
        assert (await one.call("DELETE", forged))[0] == 404  # a node nobody runs: not found, quickly

        status, problem = await one.call("POST", "/whep/nobody", sdp=await Peer.viewer().offer())
        assert status == 404, problem  # no such channel
        status, body = await one.call("GET", "/api/cluster", token=admin)
        streams = {n["id"]: [s["channel"] for s in n["streams"]] for n in body["nodes"]}
        assert streams[origin] == ["caster"]

        status, _ = await two.call("DELETE", whip["location"])
        assert status == 200
    finally:
        await viewer.close()
        await publisher.close()


async def _post(client: Client, peer: Peer, path: str, token: str | None) -> dict[str, str]:
    headers = {"Content-Type": SDP, **({"Authorization": f"Bearer {token}"} if token else {})}
    async with client.http.post(client.url + path, data=await peer.offer(), headers=headers) as response:
        answer = await response.text()
        assert response.status == 201, answer
        await peer.answer(answer)
        return {"answer": answer, "location": response.headers["Location"], "etag": response.headers["ETag"]}


async def _patch(client: Client, location: str, etag: str, fragment: str) -> tuple[int, str]:
    headers = {"Content-Type": FRAGMENT, "If-Match": etag}
    async with client.http.patch(client.url + location, data=fragment, headers=headers) as response:
        return response.status, await response.text()


def _node_of(session: dict[str, str]) -> str:
    """The node a session URL names: /whip/<channel>/<node id, URL-quoted>.<session id>."""
    match = re.fullmatch(r"/wh[ie]p/[^/]+/([^/.]+)\.[^/.]+", session["location"])
    assert match, session["location"]
    return match.group(1)
