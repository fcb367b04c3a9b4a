"""Nobody has to reload: viewers and the studio recover by themselves from drops, in real Chromium.

This module has its own server, with a publisher timeout long enough that a broadcaster who comes back
within it takes the channel over rather than starting a new stream.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from live_pages import go_live, inbound, log_in, wait_playing
from playwright.sync_api import Page, expect

if TYPE_CHECKING:
    from tests.browser.conftest import Browser, Server

    OpenBrowser = Callable[..., Browser]

pytestmark = pytest.mark.browser

SERVER_SETTINGS = {"PUBLISHER_TIMEOUT": "8"}

# Every state the player shows, in order, and a mark on its current peer connection.
OBSERVE_PLAYER = """() => {
  window.playerStates = [];
  new MutationObserver(() => window.playerStates.push(document.querySelector('#player').dataset.state))
    .observe(document.querySelector('#player'), { attributes: true, attributeFilter: ['data-state'] });
  window.tallyPlayer.pc.firstSession = true;
}"""


def frames(page: Page) -> int:
    return int(inbound(page).get("video", {}).get("framesDecoded", 0))


def keeps_decoding(page: Page, within: float = 20) -> None:
    """The player shows `playing` and decodes ~30 fps from here on."""
    deadline = time.monotonic() + within
    while True:
        before = frames(page)
        time.sleep(1.0)
        if page.locator("#player").get_attribute("data-state") == "playing" and frames(page) > before + 15:
            return
        assert time.monotonic() < deadline, f"not playing again: {page.evaluate('window.playerStates')}, {inbound(page)}"


def test_viewers_keep_watching_when_the_broadcaster_drops_and_comes_back(
    server: Server, open_browser: OpenBrowser, clips: tuple[Path, Path]
) -> None:
    name = server.unique_name("caster")
    server.register(name)
    first = open_browser(media=clips)
    go_live(first.page, server, name)
    viewer = open_browser().page
    viewer.goto(f"/watch/{name}")
    wait_playing(viewer)
    viewer.evaluate(OBSERVE_PLAYER)
    second = open_browser(media=clips).page  # the broadcaster's other machine, ready to go
    log_in(second, server, name, "/studio?codec=video/H264")
    expect(second.locator("#studio")).to_be_visible()

    first.crash()  # no DELETE, no goodbye: the server only sees the media stop
    time.sleep(0.5)
    second.click("#go-live")  # refused (409) while the old connection may still be live, then taken over
    expect(second.locator("#connection")).to_have_attribute("data-state", "live", timeout=20_000)

    keeps_decoding(viewer)
    assert viewer.evaluate("window.tallyPlayer.pc.firstSession") is True  # the same WHEP session throughout
    assert "offline" not in viewer.evaluate("window.playerStates")
    status, channel = server.call("GET", f"/api/channels/{name}")
    assert status == 200 and channel["is_live"] is True and channel["viewer_count"] == 1


def test_the_player_reconnects_when_the_server_drops_its_session(
    server: Server, open_browser: OpenBrowser, clips: tuple[Path, Path]
) -> None:
    name = server.unique_name("caster")
    server.register(name)
    go_live(open_browser(media=clips).page, server, name)
    viewer = open_browser().page
    viewer.goto(f"/watch/{name}")
    wait_playing(viewer)
    viewer.evaluate(OBSERVE_PLAYER)

    location = viewer.evaluate("window.tallyPlayer.session.location")
    with urllib.request.urlopen(urllib.request.Request(location, method="DELETE"), timeout=10) as response:
        assert response.status == 200  # as a node restart or a kicked session would

    keeps_decoding(viewer)
    assert viewer.evaluate("window.tallyPlayer.pc.firstSession") is None  # a new session
    assert "reconnecting" in viewer.evaluate("window.playerStates")


def test_everyone_recovers_after_the_server_stalls(
    server: Server, open_browser: OpenBrowser, clips: tuple[Path, Path]
) -> None:
    """The server process stops answering for a few seconds (a frozen host, a blackholed network)."""
    name = server.unique_name("caster")
    server.register(name)
    studio = open_browser(media=clips).page
    go_live(studio, server, name)
    viewer = open_browser().page
    viewer.goto(f"/watch/{name}")
    wait_playing(viewer)
    viewer.evaluate(OBSERVE_PLAYER)

    os.kill(server.pid, signal.SIGSTOP)
    try:
        time.sleep(6)
    finally:
        os.kill(server.pid, signal.SIGCONT)

    keeps_decoding(viewer, within=30)
    expect(studio.locator("#connection")).to_have_attribute("data-state", "live", timeout=20_000)
