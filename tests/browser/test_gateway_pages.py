"""The gateway (infra/gateway/) for real: nginx with a self-signed certificate in front of two
signaling instances (`tally serve --media off`) and the HLS/DASH cache (infra/cdn/), a media node
behind them, one PostgreSQL and a private Redis. Chromium goes live and watches over HTTPS, chats
over WSS, and plays HLS through the cache; the gateway's own limits answer 429."""

from __future__ import annotations

import json
import secrets
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from live_pages import go_live, log_in, ready, wait_playing
from nginx_process import infra_module, nginx, nginx_check
from pg_databases import PG_ADMIN, fresh_database
from playwright.sync_api import expect
from redis_server import redis_server
from server_process import serve
from support import free_port, logs_on_failure
from test_chat_pages import message, say
from test_hls_pages import hls_frames_advance, wait_hls_mode
from tls_files import handshake, self_signed

from conftest import Server

if TYPE_CHECKING:
    from tests.browser.conftest import Browser

    OpenBrowser = Callable[..., Browser]

pytestmark = pytest.mark.browser

gateway_render = infra_module("gateway/render.py")
edge_render = infra_module("cdn/render.py")
TRUST_GATEWAY_CERT = ("--ignore-certificate-errors",)  # the test's self-signed certificate
# Sign-ups are generous here (every test account is made through the gateway); sign-in, WHIP and
# WHEP keep the shipped limits.
LIMITS = gateway_render.Limits(signup_rate="120r/m", signup_burst=30)
BEHIND: dict[str, Any] = {}  # the instances' logs and direct URLs




@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    if PG_ADMIN == "off":
        pytest.skip("PostgreSQL runs are off (TALLY_TEST_POSTGRES=off)")
    with fresh_database("tally_gateway_pages") as url:
        yield url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[Server]:
    """The gateway the browsers talk to (https), and everything behind it."""
    root = tmp_path_factory.mktemp("gateway")
    cert, key = self_signed(root)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    trusted = ssl.create_default_context(cafile=str(cert))
    with ExitStack() as stack:
        redis = stack.enter_context(redis_server(root))
        common = {"BUS_URL": redis.url, "DATABASE_URL": database, "JWT_SECRET": secrets.token_hex(32)}
        (root / "node").mkdir()
        node = stack.enter_context(serve(root / "node", ("node",), NODE_ID="gateway-node", **common))
        doors = []
        for i in (1, 2):
            (root / f"door{i}").mkdir()
            doors.append(stack.enter_context(serve(
                root / f"door{i}", ("serve", "--media", "off"), NODE_ID=f"gateway-door-{i}", AUTO_MIGRATE="false",
                TRUST_FORWARDED_FOR="true", PUBLIC_URL=url, **common)))
        origins = [door.url.removeprefix("http://") for door in doors]
        edge_port = free_port()
        edge = edge_render.render(origins, f"127.0.0.1:{edge_port}", root / "edge", workers="1", cache_size="64m",
                                  user="root", trust_forwarded_from="127.0.0.1")
        stack.enter_context(nginx(edge, f"http://127.0.0.1:{edge_port}/healthz"))
        conf = gateway_render.render(origins, cert, key, root / "gateway", listen=f"127.0.0.1:{port}",
                                     http_listen=f"127.0.0.1:{free_port()}", edge=f"127.0.0.1:{edge_port}",
                                     workers="1", user="root", limits=LIMITS)
        nginx_check(conf)
        stack.enter_context(nginx(conf, url + "/healthz", trusted))
        running = Server(url, admin="boss", log=doors[0].log, pid=doors[0].pid, tls=trusted)
        BEHIND.update(logs=[door.log for door in doors] + [node.log], origins=origins, port=port,
                      access_log=conf.parent / "access.log")
        assert running.register("boss")["role"] == "admin"
        yield running


def answered_by(origin: str) -> int:
    """Requests the gateway passed to this signaling instance itself (its access log's upstream), the
    cache's left out: the cache balances over the instances on its own."""
    lines = BEHIND["access_log"].read_text().splitlines()
    return sum(1 for line in lines if line.rsplit(" ", 1)[-1] == origin)


def test_live_watch_chat_and_hls_over_https_through_the_gateway(
    server: Server, open_browser: OpenBrowser, clips: tuple[Path, Path]
) -> None:
    name = server.unique_name("gw")
    server.register(name)
    studio_browser = open_browser(media=clips, extra_args=TRUST_GATEWAY_CERT)
    studio = studio_browser.page
    with logs_on_failure(*BEHIND["logs"]):
        go_live(studio, server, name)
        assert studio.evaluate("location.protocol") == "https:" and studio.evaluate("window.isSecureContext")

        viewer_name = server.unique_name("gwviewer")
        server.register(viewer_name)
        viewer = open_browser(extra_args=TRUST_GATEWAY_CERT).page
        log_in(viewer, server, viewer_name, f"/watch/{name}?playback=webrtc&chat=websocket")
        wait_playing(viewer)
        # Chat over WSS through the gateway, both ways.
        expect(viewer.locator("#chat")).to_have_attribute("data-transport", "websocket")
        expect(viewer.locator("#chat")).to_have_attribute("data-can-post", "true")
        say(viewer, "hello over wss")
        expect(message(studio, "hello over wss")).to_have_count(1)
        say(studio, "welcome through the gateway")
        expect(message(viewer, "welcome through the gateway")).to_have_count(1)

        hls = open_browser(extra_args=TRUST_GATEWAY_CERT).page
        hls.goto(f"/watch/{name}?playback=hls")
        ready(hls)
        wait_hls_mode(hls)
        seen = hls_frames_advance(hls)
        assert seen["width"] >= 320, seen
    # The playlists came through the cache (its X-Cache header), HSTS on every answer.
    status, headers = head(server, f"/hls/{name}/index.m3u8")
    assert status == 200 and headers["X-Cache"] in ("HIT", "MISS", "EXPIRED", "UPDATING"), headers
    assert headers["Strict-Transport-Security"].startswith("max-age=63072000")
    # Both instances answered the pages' requests: the gateway balances over them.
    assert all(answered_by(origin) > 20 for origin in BEHIND["origins"]), [answered_by(o) for o in BEHIND["origins"]]


def head(server: Server, path: str, method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(server.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=server.tls) as response:
            response.read()
            return response.status, response.headers
    except urllib.error.HTTPError as error:
        error.read()
        return error.code, error.headers


def test_the_gateway_speaks_tls_1_2_and_later_only(server: Server) -> None:
    assert handshake("127.0.0.1", BEHIND["port"], ssl.TLSVersion.TLSv1_1) is None
    assert handshake("127.0.0.1", BEHIND["port"], ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake("127.0.0.1", BEHIND["port"], ssl.TLSVersion.TLSv1_3) == "TLSv1.3"


def test_the_gateway_limits_answer_429_with_problem_details(server: Server) -> None:
    login = json.dumps({"username": "nobody", "password": "wrong password here"}).encode()
    statuses = [head(server, "/api/auth/login", "POST", login, {"Content-Type": "application/json"})[0]
                for _ in range(12)]
    assert statuses[0] == 401 and 429 in statuses, statuses  # the app refuses, then the gateway
    first = statuses.index(429)
    assert all(s == 429 for s in statuses[first:]) and first <= LIMITS.signin_burst + 2, statuses
    request = urllib.request.Request(server.url + "/api/auth/login", data=login, method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10, context=server.tls)
    assert refused.value.code == 429 and refused.value.headers["Retry-After"] == "60"
    assert refused.value.headers["Content-Type"] == "application/problem+json"
    assert json.loads(refused.value.read())["status"] == 429

    statuses = [head(server, "/whip/nobody", "POST", b"v=0", {"Content-Type": "application/sdp"})[0]
                for _ in range(LIMITS.whip_burst + 3)]
    assert statuses[0] == 401 and statuses[-1] == 429, statuses

    # A body over the gateway's size never reaches an instance.
    status, headers = head(server, "/api/auth/login", "POST", b"x" * 70_000, {"Content-Type": "application/json"})
    assert status == 413 and headers["Content-Type"] == "application/problem+json"
    # Plain GETs (pages, playlists, the API's reads) are not limited by it.
    assert all(head(server, "/api/ice-servers")[0] == 200 for _ in range(20))
