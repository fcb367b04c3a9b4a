"""The cluster across "hosts": three `tally node`s, each in its own network namespace with its own
address (as separate machines would be), meeting on Redis and PostgreSQL in the root namespace; a front
door and the clients in the root namespace too. Each node takes one viewer, so a stream spans all three.
The nodes serve only what the door and monitoring ask of them over HTTP (PUBLIC_HTTP=false).
"""

from __future__ import annotations

import secrets
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import pytest

from hosts import can_make_hosts, forwarder, hosts
from http_client import Client
from redis_server import redis_server
from server_process import serve
from sfu import aiortc_internals as internals
from test_cluster_failover import connect
from test_hls import variants
from webrtc_peer import Peer

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["postgres"], indirect=True),
              pytest.mark.skipif(bool(can_make_hosts()), reason=can_make_hosts() or "-")]

NAMES = ["host-a", "host-b", "host-c"]


async def test_a_stream_spans_three_hosts(tmp_path: Path, database_url: str) -> None:
    with hosts(NAMES) as net, redis_server(tmp_path, also_on=(net.gateway,)) as redis, \
            forwarder(net.gateway, ("127.0.0.1", 5432)) as postgres_port, ExitStack() as stack:
        assert "@127.0.0.1:5432/" in database_url
        common = {"DATABASE_URL": database_url, "AUTO_MIGRATE": "false", "JWT_SECRET": secrets.token_hex(32),
                  "LOG_LEVEL": "INFO", "MAX_VIEWERS_PER_NODE": "1"}
        node_urls: dict[str, str] = {}
        for name in NAMES:
            address, home = net.addresses[name], tmp_path / name
            home.mkdir()
            node_urls[name] = stack.enter_context(serve(
                home, ("node",), host=address, prefix=net.prefix(name), NODE_ID=name, WEBRTC_HOST_ADDRESSES=address,
                PUBLIC_HTTP="false",
                **{**common, "BUS_URL": redis.url_on(net.gateway),
                   "DATABASE_URL": database_url.replace("127.0.0.1:5432", f"{net.gateway}:{postgres_port}")})).url
        (tmp_path / "door").mkdir()
        door_process = stack.enter_context(serve(tmp_path / "door", ("serve", "--media", "off"), NODE_ID="door",
                                                 BUS_URL=redis.url, **common))
        async with aiohttp.ClientSession() as http:
            door = Client(http, door_process.url)
            admin = await door.admin("boss")
            key = await door.broadcaster("caster")
            # The clients are on this machine's side of the bridge: they gather there, not on loopback.
            here = internals.IcePlan((net.gateway,))
            publisher, viewers = Peer.publisher("h264", audio=True), [Peer.viewer() for _ in NAMES]
            for peer in (publisher, *viewers):
                internals.plan_gathering(peer.pc, here)
            try:
                origin = await connect(door, publisher, "/whip/caster", key, time.monotonic() + 15)
                placed = [await connect(door, viewer, "/whep/caster", None, time.monotonic() + 15) for viewer in viewers]
                assert placed[0] == origin and sorted(placed) == sorted(NAMES), placed
                for viewer in viewers:  # video from every host: the origin's and its two relays'
                    await viewer.wait_frames(15, timeout=15)
                status, body = await door.call("GET", "/api/cluster", token=admin)
                nodes = {n["id"]: n for n in body["nodes"]}
                assert {n["media_addresses"][0] for n in nodes.values()} == set(net.addresses.values())
                assert all(nodes[name]["streams"][0]["relay_from"] for name in NAMES if name != origin)

                # HLS through the door, from the origin's host.
                status, master = await door.call("GET", "/hls/caster/index.m3u8")
                assert status == 200, master
                rendition = "/hls/caster/" + variants(master.decode())[0][1]
                status, playlist = await door.call("GET", rendition)
                assert status == 200 and b"#EXT-X-PART" in playlist, playlist

                # A node answers the door and monitoring, and nothing else: no API, pages, chat or WHIP.
                node = Client(http, node_urls[origin])
                for path in ("/healthz", "/readyz", "/metrics", "/hls/caster/index.m3u8"):
                    status, body = await node.call("GET", path)
                    assert status == 200, (path, body)
                for method, path in (("GET", "/api/me"), ("GET", "/api/channels/caster"), ("GET", "/"),
                                     ("GET", "/watch/caster"), ("GET", "/ws"), ("POST", "/api/auth/login"),
                                     ("POST", "/whip/caster"), ("OPTIONS", "/whep/caster")):
                    async with http.request(method, node_urls[origin] + path, data=b"v=0\r\n",
                                            headers={"Authorization": f"Bearer {key}"}) as answer:
                        problem = await answer.json(content_type=None)
                        assert answer.status == 404 and "media node" in problem["detail"], (method, path, problem)
            finally:
                for peer in (publisher, *viewers):
                    await peer.close()
    logs = "".join((tmp_path / name / "server.log").read_text() for name in (*NAMES, "door"))
    assert "Traceback" not in logs, logs[-5000:]
