"""Front doors without media send WHIP/WHEP sessions to the cluster's media nodes.

Two `tally serve --media off` front doors and two `tally node`s (each gathering on its own loopback
address, as separate hosts would), all on one PostgreSQL and a private Redis, as separate processes.
A real publisher (aiortc) goes live through one front door and a real viewer watches through the other;
the session URLs name the node, so PATCH and DELETE work through either front door.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from hls_validator import parse
from bus import open_bus
from http_client import SDP, Client
from redis_server import redis_server
from server_process import REPO_ROOT, ServerProcess, serve, server_env, tally
from support import free_port
from test_chat import DcClient, WsClient
from test_hls import variants
from webrtc_peer import Peer

FRAGMENT = "application/trickle-ice-sdpfrag"
ADDRESSES = {"node-1": "127.0.0.2", "node-2": "127.0.0.3"}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_front_doors_place_sessions_on_nodes_and_any_door_reaches_them(tmp_path: Path,
                                                                            database_url: str) -> None:
    with redis_server(tmp_path) as redis:
        common = {"BUS_URL": redis.url, "DATABASE_URL": database_url, "AUTO_MIGRATE": "false",
                  "JWT_SECRET": secrets.token_hex(32), "LOG_LEVEL": "INFO"}
        for name in ("door1", "door2", "node1", "node2", "twin"):
            (tmp_path / name).mkdir()
        with serve(tmp_path / "node1", ("node",), NODE_ID="node-1", WEBRTC_HOST_ADDRESSES=ADDRESSES["node-1"],
                   **common) as node1, \
                serve(tmp_path / "node2", ("node",), NODE_ID="node-2", WEBRTC_HOST_ADDRESSES=ADDRESSES["node-2"],
                      **common) as node2, \
                serve(tmp_path / "door1", ("serve", "--media", "off"), NODE_ID="door-1", **common) as door1, \
                serve(tmp_path / "door2", ("serve", "--media", "off"), NODE_ID="door-2", **common) as door2:
            twin = subprocess.run(tally("node"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                                  env=server_env(tmp_path / "twin", free_port(), NODE_ID="node-1", **common))
            assert twin.returncode == 3 and "another live process announces itself as node 'node-1'" in twin.stderr

            async with aiohttp.ClientSession() as http:
                one, two = Client(http, door1.url), Client(http, door2.url)
                admin = await one.admin("boss")
                status, body = await one.call("GET", "/api/cluster", token=admin)
                assert status == 200 and [n["id"] for n in body["nodes"]] == ["node-1", "node-2"]  # doors are not nodes
                key = await two.broadcaster("caster")

                publisher = Peer.publisher("h264", audio=True)
                try:
                    whip = await _post(one, publisher, "/whip/caster", key)
                    origin = _node_of(whip)
                    assert f" {ADDRESSES[origin]} " in whip["answer"] and "127.0.0.1" not in whip["answer"]
                    await _watch_through_the_other_door(one, two, origin)
                    await _hls_through_a_door(two)
                    await _one_conversation_on_a_node_and_a_door(one, two)
                    await _one_publisher_per_channel_through_any_door(one, two)
                    await _a_garbled_control_message_changes_nothing(redis.url, origin, one, whip)
                    status, body = await one.call("GET", "/api/cluster", token=admin)
                    streams = {n["id"]: [s["channel"] for s in n["streams"]] for n in body["nodes"]}
                    assert "caster" in streams[origin]
                    await _a_live_origins_claim_does_not_pass_on_a_doors_word(redis.url, origin)
                    await _a_dead_nodes_sessions_are_gone(two, {"node-1": node1, "node-2": node2}[origin], whip)
                finally:
                    await publisher.close()
        log = (tmp_path / "door1" / "server.log").read_text() + (tmp_path / "door2" / "server.log").read_text()
    assert "Traceback" not in log, log[-5000:]


async def _watch_through_the_other_door(one: Client, two: Client, origin: str) -> None:
    viewer = Peer.viewer()
    try:
        whep = await _post(two, viewer, "/whep/caster", None)  # placed where the stream is
        assert _node_of(whep) == origin
        await viewer.wait_frames(15)

        # The viewer's session, created through door two, trickled, restarted and ended through door one.
        assert (await _patch(one, whep["location"], whep["etag"], "a=end-of-candidates\r\n"))[0] == 204
        assert (await _patch(one, whep["location"], '"stale"', "a=end-of-candidates\r\n"))[0] == 412
        other_channel = whep["location"].replace("/whep/caster/", "/whep/boss/")
        assert (await _patch(one, other_channel, whep["etag"], "a=end-of-candidates\r\n"))[0] == 404
        assert (await one.call("DELETE", other_channel))[0] == 404  # the channel in the URL is checked too
        # Its layers, asked of the node through the other door (no ladder runs: the source alone).
        status, layers = await one.call("GET", whep["location"] + "/layers")
        assert status == 200 and layers == {"choices": ["source"], "current": "source", "auto": True}, layers
        status, layers = await one.call("PUT", whep["location"] + "/layers", {"layer": "source"})
        assert status == 200 and layers["auto"] is False, layers
        assert (await two.call("PUT", whep["location"] + "/layers", {"layer": "360p"}))[0] == 404
        assert (await two.call("PUT", whep["location"] + "/layers", {"layer": "auto"}))[1]["auto"] is True
        restart = "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
        status, answer, etag = await _patch_full(one, whep["location"], "*", restart)
        assert status == 200 and "a=ice-ufrag:" in answer and etag and etag != whep["etag"], answer
        assert (await _patch(two, whep["location"], whep["etag"], "a=end-of-candidates\r\n"))[0] == 412  # new ETag
        assert (await one.call("DELETE", whep["location"]))[0] == 200
        assert (await two.call("DELETE", whep["location"]))[0] == 404  # gone for every door
        assert (await one.call("DELETE", whep["location"].replace("/whep/", "/whip/")))[0] == 404
        forged = whep["location"].rsplit("/", 1)[0] + "/no-such-node.abc"
        started = time.monotonic()
        assert (await one.call("DELETE", forged))[0] == 404  # a node nobody runs: not found, at once
        assert time.monotonic() - started < 3
        status, problem = await one.call("POST", "/whep/nobody", sdp=await Peer.viewer().offer())
        assert status == 404, problem  # no such channel
    finally:
        await viewer.close()


async def _hls_through_a_door(door: Client) -> None:
    """The ladder runs on the origin node; the door passes every HLS request on, blocking reloads too."""
    status, body = await door.call("GET", "/hls/caster/index.m3u8")
    assert status == 200, body
    ladder = variants(body.decode())
    assert ladder and all(uri.endswith("/index.m3u8") for _, uri in ladder), body
    rendition = "/hls/caster/" + ladder[0][1]
    status, body = await door.call("GET", rendition)
    assert status == 200, body
    playlist = parse(body.decode())
    nxt = playlist.segments[-1].msn + 1
    async with door.http.get(door.url + rendition, params={"_HLS_msn": str(nxt), "_HLS_part": "0"}) as answer:
        assert answer.status == 200 and answer.headers["Content-Type"] == "application/vnd.apple.mpegurl"
        assert "#EXT-X-PART:" in await answer.text()  # the origin held the answer until that part existed
    segment = rendition.rsplit("/", 1)[0] + "/" + playlist.segments[-1].uri
    async with door.http.get(door.url + segment) as answer:
        assert answer.status == 200 and answer.headers["Content-Type"] == "video/mp4"
        assert "immutable" in answer.headers["Cache-Control"] and len(await answer.read()) > 1000
    ffprobe = await asyncio.create_subprocess_exec(
        "ffprobe", "-v", "error", "-print_format", "json", "-show_streams", door.url + "/hls/caster/index.m3u8",
        stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(ffprobe.communicate(), 60)
    codecs = {s["codec_type"]: s["codec_name"] for s in json.loads(out)["streams"]}
    assert codecs.get("video") == "h264" and codecs.get("audio") in ("aac", "opus"), codecs
    assert (await door.call("GET", "/hls/nobody/index.m3u8"))[0] == 404
    assert await door.metric("tally_hls_relayed") >= 4


async def _one_conversation_on_a_node_and_a_door(one: Client, two: Client) -> None:
    """A signed-in viewer chats on its session's data channel (on the node); a WebSocket on a door
    chats in the same conversation (the node's chat and the door's meet on the bus)."""
    await one.broadcaster("chatty")
    status, login = await one.call("POST", "/api/auth/login", {"username": "chatty", "password": "correct horse"})
    token = login["access_token"]
    viewer = Peer.viewer()
    rtc = DcClient(viewer.pc.createDataChannel("chat"))
    socket = None
    try:
        await _post(two, viewer, "/whep/caster", token)
        await rtc.of_type("welcome", timeout=10)
        assert (await rtc.of_type("you"))["username"] == "chatty"  # who the viewer is travelled to the node
        socket = WsClient(await one.http.ws_connect(one.url + "/ws?channel=caster"))
        await socket.of_type("welcome")
        await socket.send({"type": "auth", "token": token})
        await socket.expect(lambda f: f["type"] == "you" and f["username"] == "chatty")
        rtc.channel.send(json.dumps({"type": "send", "text": "from the node", "nonce": "d1"}))
        await rtc.of_type("ack", nonce="d1")
        await socket.of_type("message", text="from the node")
        assert (await socket.post("from the door", "w1"))["type"] == "ack"
        await rtc.of_type("message", text="from the door")
    finally:
        if socket is not None:
            await socket.close()
        await viewer.close()


async def _one_publisher_per_channel_through_any_door(one: Client, two: Client) -> None:
    """Two publishers of one channel at once, through two doors: one goes live, the other is refused."""
    key = await one.broadcaster("rival")
    first, second = Peer.publisher("h264"), Peer.publisher("h264")
    headers = {"Content-Type": SDP, "Authorization": f"Bearer {key}"}
    try:
        offers = [await first.offer(), await second.offer()]

        async def post(door: Client, offer: str) -> tuple[int, str]:
            async with door.http.post(door.url + "/whip/rival", data=offer, headers=headers) as response:
                return response.status, response.headers.get("Location", "")

        results = await asyncio.gather(post(one, offers[0]), post(two, offers[1]))
        assert sorted(status for status, _ in results) == [201, 409], results
        winner = next(location for status, location in results if status == 201)
        assert (await one.call("DELETE", winner))[0] == 200
    finally:
        await first.close()
        await second.close()


async def _a_live_origins_claim_does_not_pass_on_a_doors_word(redis_url: str, origin: str) -> None:
    """A publish that names the live origin as dead (`steal_from`) is refused: the node checks for itself."""
    other = "node-2" if origin == "node-1" else "node-1"
    bus = open_bus(redis_url)
    try:
        answer = await bus.request(f"node.{other}.control", {
            "op": "publish", "channel": "caster", "offer": await Peer.publisher("h264").offer(), "owner": "caster",
            "client": "198.51.100.7", "budget": 8.0, "steal_from": origin,
        }, timeout=10)
    finally:
        await bus.close()
    assert answer.get("refused") == "AlreadyPublishing", answer


async def _a_garbled_control_message_changes_nothing(redis_url: str, origin: str, door: Client,
                                                     whip: dict[str, str]) -> None:
    """Anyone with access to Redis can publish junk on a node's control topic: the node keeps serving."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        for junk in (b"x", b'{"t": "a", "p": []}', b'{"t": "a", "p": {}, "r": 5}', b'{"t": "a", "p": {"op": 1}, "r": "x"}'):
            await client.publish(f"node.{origin}.control", junk)
    finally:
        await client.aclose()
    assert (await _patch(door, whip["location"], whip["etag"], "a=end-of-candidates\r\n"))[0] == 204


async def _a_dead_nodes_sessions_are_gone(door: Client, origin: ServerProcess, whip: dict[str, str]) -> None:
    origin.kill()
    started = time.monotonic()
    assert (await door.call("DELETE", whip["location"]))[0] == 404  # nobody serves that node any more
    assert time.monotonic() - started < 3


async def _post(client: Client, peer: Peer, path: str, token: str | None) -> dict[str, str]:
    """POST the peer's offer as a WHIP/WHEP client does, retrying a 409 (not live yet) as players do."""
    headers = {"Content-Type": SDP, **({"Authorization": f"Bearer {token}"} if token else {})}
    offer = await peer.offer()
    for _ in range(20):
        async with client.http.post(client.url + path, data=offer, headers=headers) as response:
            answer = await response.text()
            if response.status == 409 and path.startswith("/whep/"):
                await asyncio.sleep(0.25)
                continue
            assert response.status == 201, answer
            await peer.answer(answer)
            return {"answer": answer, "location": response.headers["Location"], "etag": response.headers["ETag"]}
    raise AssertionError(f"{path} stayed not live")


async def _patch(client: Client, location: str, etag: str, fragment: str) -> tuple[int, str]:
    status, body, _ = await _patch_full(client, location, etag, fragment)
    return status, body


async def _patch_full(client: Client, location: str, etag: str, fragment: str) -> tuple[int, str, str]:
    headers = {"Content-Type": FRAGMENT, "If-Match": etag}
    async with client.http.patch(client.url + location, data=fragment, headers=headers) as response:
        return response.status, await response.text(), response.headers.get("ETag", "")


def _node_of(session: dict[str, str]) -> str:
    """The node a session URL names: /whip/<channel>/<node id, URL-quoted>.<session id>."""
    match = re.fullmatch(r"/wh[ie]p/[^/]+/([^/.]+)\.[^/.]+", session["location"])
    assert match, session["location"]
    return match.group(1)
