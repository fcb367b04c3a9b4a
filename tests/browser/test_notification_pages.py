"""Notifications in Chromium: a fan follows a channel with the bell on, the broadcaster goes live from
the studio, and the bell in the fan's other tab shows it within seconds; the toast leads to the
channel, and the notifications page lists it and marks it read."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from live_pages import end_stream, go_live, log_in, ready
from page_checks import check_page
from playwright.sync_api import Page, expect

if TYPE_CHECKING:
    from tests.browser.conftest import Browser, Server

    OpenBrowser = Callable[..., Browser]

pytestmark = pytest.mark.browser

SERVER_SETTINGS = {"NOTIFY_SETTLE": "1"}  # seconds a stream must stay live before followers hear (30 by default)


def until(page: Page, predicate: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not page.evaluate(predicate):
        assert time.monotonic() < deadline, f"not true within {timeout} s: {predicate}"
        time.sleep(0.2)


def test_a_fans_bell_rings_in_another_tab_when_the_channel_goes_live(
    server: Server, open_browser: OpenBrowser, clips: tuple[Path, Path]
) -> None:
    star, fan = server.unique_name("star"), server.unique_name("fan")
    server.register(star)
    server.register(fan)

    fan_browser = open_browser()
    watch = fan_browser.page
    log_in(watch, server, fan, f"/watch/{star}")
    watch.click("#follow-button")
    expect(watch.locator("#follow-bell")).to_be_visible()
    expect(watch.locator("#follow-bell")).to_have_value("all")
    watch.select_option("#follow-bell", "live")  # the bell's choice is kept...
    watch.reload()
    ready(watch)
    expect(watch.locator("#follow-bell")).to_have_value("live")
    watch.select_option("#follow-bell", "all")
    expect(watch.locator("#follow-bell")).to_be_enabled()

    other = fan_browser.context.new_page()  # the fan's other tab, on the directory
    other.goto("/")
    ready(other)
    bell = other.locator("#nav-bell")
    expect(bell).to_have_attribute("data-unread", "0")
    expect(bell).to_have_attribute("data-live", "true", timeout=10_000)  # its WebSocket listens
    expect(other.locator("#bell-count")).to_be_hidden()

    studio = open_browser(media=clips).page
    go_live(studio, server, star)
    started = time.monotonic()
    expect(bell).to_have_attribute("data-unread", "1", timeout=15_000)
    print(f"NOTIFY bell rang {time.monotonic() - started:.1f} s after the studio showed Live (settle 1 s)")
    expect(other.locator("#bell-count")).to_have_text("1")
    expect(bell).to_have_attribute("aria-label", "Notifications, 1 unread")
    toast = other.locator("#toast")
    expect(toast).to_be_visible()
    expect(toast.locator("a")).to_have_attribute("href", f"/watch/{star}")
    expect(toast.locator("a")).to_contain_text("is live")

    bell.click()
    other.wait_for_url("**/notifications")
    ready(other)
    item = other.locator(".notification").first
    expect(item).to_have_attribute("data-read", "false")
    expect(item.locator("a")).to_contain_text(f"{star} is live")
    problems = check_page(other, "notifications")
    other.click("#read-all")
    expect(other.locator("#bell-count")).to_be_hidden()
    expect(item).to_have_attribute("data-read", "true")
    until(other, "() => document.querySelector('#nav-bell').dataset.unread === '0'")
    end_stream(studio)
    assert not problems, "\n".join(problems)
