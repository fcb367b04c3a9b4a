"""Chat in real Chromium: a viewer on the WebRTC data channel, a viewer on the WebSocket and the
broadcaster in the studio talk both ways; a moderator the broadcaster appointed deletes a message and
it disappears in every tab. Text from users stays text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from live_pages import go_live, log_in, wait_playing
from playwright.sync_api import Page, expect

if TYPE_CHECKING:
    from tests.browser.conftest import Browser, Server

    OpenBrowser = Callable[..., Browser]

pytestmark = pytest.mark.browser


def say(page: Page, text: str) -> None:
    page.fill("#chat .chat-form input", text)
    page.click("#chat .chat-form button")


def message(page: Page, text: str):  # type: ignore[no-untyped-def]
    return page.locator("#chat .chat-message", has_text=text)


def test_viewers_on_both_transports_and_the_broadcaster_chat_and_a_moderator_deletes(
    server: Server, open_browser: OpenBrowser, clips: tuple[Path, Path]
) -> None:
    caster, rtc_viewer, ws_viewer = (server.unique_name(stem) for stem in ("caster", "viewer", "mod"))
    for name in (caster, rtc_viewer, ws_viewer):
        server.register(name)
    studio = open_browser(media=clips).page
    go_live(studio, server, caster)
    expect(studio.locator("#chat")).to_have_attribute("data-transport", "websocket")
    studio.click("summary:has-text('Chat moderators')")
    studio.fill("#moderator-name", ws_viewer)
    studio.click("#moderator-form button")
    expect(studio.locator("#moderator-status")).to_contain_text(ws_viewer)

    webrtc = open_browser().page
    log_in(webrtc, server, rtc_viewer, f"/watch/{caster}")
    wait_playing(webrtc)
    expect(webrtc.locator("#chat")).to_have_attribute("data-transport", "datachannel", timeout=10_000)
    expect(webrtc.locator("#chat")).to_have_attribute("data-can-post", "true")

    socket = open_browser().page
    log_in(socket, server, ws_viewer, f"/watch/{caster}?chat=websocket")
    expect(socket.locator("#chat")).to_have_attribute("data-transport", "websocket")
    expect(socket.locator("#chat")).to_have_attribute("data-can-moderate", "true")

    say(webrtc, "hello from the data channel")
    say(socket, "hello from the websocket")
    say(studio, "welcome, both of you")
    for page in (studio, webrtc, socket):
        for text in ("hello from the data channel", "hello from the websocket", "welcome, both of you"):
            expect(message(page, text)).to_have_count(1)
    expect(message(socket, "welcome, both of you").locator(".chat-badge-broadcaster")).to_have_count(1)

    # Markup from a user is shown as text, never parsed.
    say(webrtc, '<img src=x onerror="window.pwned=1"> <b>bold</b>')
    expect(message(studio, "<b>bold</b>")).to_have_count(1)
    assert studio.locator("#chat img, #chat b").count() == 0
    assert socket.evaluate("window.pwned") is None

    # The moderator (on the WebSocket) deletes the data-channel viewer's message: gone in every tab.
    message(socket, "hello from the data channel").locator(".chat-delete").click()
    for page in (socket, webrtc, studio):
        expect(message(page, "hello from the data channel")).to_have_count(0)
        expect(message(page, "hello from the websocket")).to_have_count(1)

    # A time-out shows in the timed-out viewer's tab: the box is disabled and says why.
    message(socket, "<b>bold</b>").locator(".chat-timeout").click()
    expect(webrtc.locator("#chat")).to_have_attribute("data-can-post", "false")
    expect(webrtc.locator("#chat .chat-form input")).to_be_disabled()
    assert "timed out" in (webrtc.locator("#chat .chat-form input").get_attribute("placeholder") or "")
    expect(studio.locator("#chat .chat-notice", has_text="timed out")).to_have_count(1)
