"""The web app through a front door of a cluster: Chromium goes live in /studio and watches on /watch
(WebRTC, then HLS) from a `tally serve --media off` front door, while the media and the HLS ladder are
on three `tally node`s — separate processes on one PostgreSQL database and a private Redis, each in a
network namespace of its own with its own address, as separate hosts would be (on loopback where the
machine cannot make namespaces). Each node takes one viewer, so Chromium viewers beyond the first watch
the stream relayed to the other nodes, across hosts."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hosts import Hosts, can_make_hosts, forwarder, hosts
from live_pages import end_stream, go_live, inbound, ready, wait_playing
from pg_databases import PG_ADMIN, fresh_database
from playwright.sync_api import expect
from redis_server import redis_server
from server_process import serve
from support import logs_on_failure
from test_hls_pages import hls_frames_advance, wait_hls_mode

from conftest import Server

if TYPE_CHECKING:
    from tests.browser.conftest import Browser

    OpenBrowser = Callable[..., Browser]

pytestmark = pytest.mark.browser



@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A database of its own: the cluster's first account must be its admin."""
    if PG_ADMIN == "off":
        pytest.skip("PostgreSQL runs are off (TALLY_TEST_POSTGRES=off)")
    with fresh_database("tally_cluster_pages") as url:
        yield url


NODES = ["pages-node", "pages-node-b", "pages-node-c"]


@pytest.fixture(scope="module")
def net() -> Iterator[Hosts | None]:
    """A host for each node, when the machine can make them (root); None: the nodes share loopback."""
    if can_make_hosts():
        yield None
        return
    with hosts(NODES) as made:
        yield made


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, database: str, net: Hosts | None) -> Iterator[Server]:
    """The front door the browsers talk to, on this machine; three media nodes behind it, each on a host of
    its own when the machine can make them (the first node migrates the database)."""
    root = tmp_path_factory.mktemp("cluster")
    with ExitStack() as stack:
        also_on = (net.gateway,) if net else ()
        redis = stack.enter_context(redis_server(root, also_on=also_on))
        common = {"BUS_URL": redis.url, "DATABASE_URL": database, "JWT_SECRET": secrets.token_hex(32),
                  "MAX_VIEWERS_PER_NODE": "1"}
        on_hosts = dict(common)
        if net is not None:  # the nodes reach Redis and PostgreSQL through the bridge
            assert "@127.0.0.1:5432/" in database
            postgres_port = stack.enter_context(forwarder(net.gateway, ("127.0.0.1", 5432)))
            on_hosts.update(BUS_URL=redis.url_on(net.gateway),
                            DATABASE_URL=database.replace("127.0.0.1:5432", f"{net.gateway}:{postgres_port}"))
        for i, name in enumerate(NODES):
            (root / name).mkdir()
            where: dict[str, Any] = {}
            if net is not None:
                address = net.addresses[name]
                where = {"host": address, "prefix": net.prefix(name), "WEBRTC_HOST_ADDRESSES": address}
            stack.enter_context(serve(root / name, ("node",), NODE_ID=name, **where, **on_hosts,
                                      **({} if i == 0 else {"AUTO_MIGRATE": "false"})))
        (root / "door").mkdir()
        door = stack.enter_context(serve(root / "door", ("serve", "--media", "off"), NODE_ID="pages-door",
                                         AUTO_MIGRATE="false", **common))
        running = Server(door.url, admin="boss", log=door.log, pid=door.pid)
        assert running.register("boss")["role"] == "admin"
        yield running


def test_go_live_and_watch_through_a_front_door_while_the_media_is_on_a_node(
    server: Server, open_browser: OpenBrowser, clips: tuple[Path, Path]
) -> None:
    name = server.unique_name("door")
    server.register(name)
    studio = open_browser(media=clips).page
    go_live(studio, server, name)

    viewer = open_browser()
    viewer.page.goto(f"/watch/{name}")
    stats = wait_playing(viewer.page)
    assert stats["video"]["codec"] == "video/H264"
    node = _node_carrying(server, name)
    assert node["id"].startswith("pages-node") and node["streams"][0]["channel"] == name
    viewer.close()

    # hls.js in the watch page: the ladder runs on the node, the door passes every request on.
    hls = open_browser()
    hls.page.goto(f"/watch/{name}?playback=hls")
    ready(hls.page)
    with logs_on_failure(server.log, *(server.log.parent.parent / node / "server.log" for node in NODES)):
        wait_hls_mode(hls.page)
        seen = hls_frames_advance(hls.page)
    assert seen["width"] >= 320 and seen["latency"] is not None and seen["latency"] < 3.0, seen
    assert _node_carrying(server, name)["load"]["ladders"] == 1
    hls.close()

    end_stream(studio)
    expect(studio.locator("#connection")).not_to_have_attribute("data-state", "live", timeout=10_000)


def test_chromium_viewers_on_three_nodes_watch_one_stream_relayed(
    server: Server, net: Hosts | None, open_browser: OpenBrowser, clips: tuple[Path, Path]
) -> None:
    name = server.unique_name("relay")
    server.register(name)
    studio = open_browser(media=clips).page
    go_live(studio, server, name)
    viewers = []
    for _ in range(3):  # one per node: the origin's own, then one on each relay
        viewer = open_browser()
        viewer.page.goto(f"/watch/{name}")
        stats = wait_playing(viewer.page)  # video decoded and audio received
        assert stats["video"]["codec"] == "video/H264"
        viewers.append(viewer)
    token = server.token(server.admin)
    status, body = server.call("GET", "/api/cluster", token=token)
    carrying = {n["id"]: s for n in body["nodes"] for s in n["streams"] if s["channel"] == name}
    assert len(carrying) == 3 and sum(1 for s in carrying.values() if s["relay_from"]) == 2, body
    if net is not None:  # each viewer's media comes straight from its own node's host
        remotes = sorted(inbound(viewer.page).get("remote", "") for viewer in viewers)
        assert remotes == sorted(net.addresses.values()), remotes
    for viewer in viewers:  # still decoding, each from its own node
        before = wait_playing(viewer.page)["video"]["framesDecoded"]
        deadline = time.monotonic() + 5
        while wait_playing(viewer.page)["video"]["framesDecoded"] <= before + 10:
            assert time.monotonic() < deadline, "a viewer stopped decoding"
            time.sleep(0.2)
        viewer.close()
    end_stream(studio)
    expect(studio.locator("#connection")).not_to_have_attribute("data-state", "live", timeout=10_000)


def _node_carrying(server: Server, channel: str) -> dict[str, Any]:
    token = server.token(server.admin)
    deadline = time.monotonic() + 5
    while True:
        status, body = server.call("GET", "/api/cluster", token=token)
        assert status == 200, body
        for node in body["nodes"]:
            if any(s["channel"] == channel for s in node["streams"]):
                return dict(node)
        assert time.monotonic() < deadline, body
        time.sleep(0.25)
