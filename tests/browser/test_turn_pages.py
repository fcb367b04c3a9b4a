"""Only relayed paths: Chromium publishes from the studio and watches with `iceTransportPolicy: "relay"`,
through a real coturn, over UDP and over TCP (a network that lets no UDP out).

The pages ask the server for their ICE servers (/api/ice-servers) as they always do; the test stands
in for the strict network by forcing relay candidates (and, for TCP, the TCP relay only) in every
peer connection the pages make, and checks the selected candidate pair of each is a relay.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Browser, Server
from live_pages import go_live, ready, wait_playing
from playwright.sync_api import Page
from turn_server import TurnServer, free_udp_and_tcp_port, turn_server

pytestmark = pytest.mark.browser

TURN_SECRET = secrets.token_hex(16)
TURN_PORT = free_udp_and_tcp_port()  # chosen now for the server's settings; coturn starts later
SERVER_SETTINGS = {
    "TURN_URLS": f"turn:127.0.0.1:{TURN_PORT}?transport=udp,turn:127.0.0.1:{TURN_PORT}?transport=tcp",
    "TURN_SECRET": TURN_SECRET,
}

# The strict network: relay candidates only, and with `transport` set, only that TURN transport.
ONLY_RELAYS = """
(() => {
  const transport = %s;
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (configuration = {}) {
    const servers = (configuration.iceServers || [])
      .map((s) => ({ ...s, urls: [].concat(s.urls).filter((u) => !transport || u.endsWith(`transport=${transport}`)) }))
      .filter((s) => s.urls.length);
    const pc = new Native({ ...configuration, iceServers: servers, iceTransportPolicy: "relay" });
    window.__pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
})();
"""

SELECTED_PAIR = """async () => {
  const pc = window.__pcs.filter((p) => p.connectionState === "connected").pop();
  if (!pc) return null;
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach((r) => { if (r.type === "transport" && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId); });
  if (!pair) return null;
  const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
  return { local: local.candidateType, relayProtocol: local.relayProtocol, url: local.url, remote: remote.candidateType,
           bytesReceived: pair.bytesReceived, bytesSent: pair.bytesSent };
}"""


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TurnServer]:
    with turn_server(tmp_path_factory.mktemp("coturn"), TURN_SECRET, TURN_PORT) as server:
        yield server


def selected_pair(page: Page) -> dict[str, Any]:
    pair = page.evaluate(SELECTED_PAIR)
    assert pair is not None, "no connected peer connection with a selected pair"
    return dict(pair)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_studio_and_viewer_work_through_turn_only(
    transport: str, server: Server, coturn: TurnServer, open_browser: Any, clips: tuple[Path, Path]
) -> None:
    name = server.unique_name(f"turn{transport}")
    server.register(name)
    studio: Browser = open_browser(media=clips)
    studio.context.add_init_script(ONLY_RELAYS % f'"{transport}"')
    go_live(studio.page, server, name)
    published = selected_pair(studio.page)
    assert published["local"] == "relay" and published["relayProtocol"] == transport, published
    assert published["bytesSent"] > 10_000, published

    viewer: Browser = open_browser()
    viewer.context.add_init_script(ONLY_RELAYS % f'"{transport}"')
    viewer.page.goto(f"/watch/{name}?playback=webrtc")
    ready(viewer.page)
    wait_playing(viewer.page)
    watched = selected_pair(viewer.page)
    assert watched["local"] == "relay" and watched["relayProtocol"] == transport, watched
    assert watched["bytesReceived"] > 10_000, watched

    # coturn saw both allocations, under the credentials the server issued (publisher by name, the
    # viewer by a keyed hash of its address).
    log = coturn.log.read_text(errors="replace")
    assert f":{name}>" in log, "the studio's relay is not in coturn's log"
    assert ":guest-" in log
