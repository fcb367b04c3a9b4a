"""Helpers for the pages that publish and play media: log in, go live in the studio, read a player's stats."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from playwright.sync_api import Page, expect

if TYPE_CHECKING:
    from conftest import Server

INBOUND = """async () => {
  const pc = window.tallyPlayer && window.tallyPlayer.pc;
  if (!pc) return null;
  const out = {};
  const report = await pc.getStats();
  report.forEach((s) => {
    if (s.type === 'inbound-rtp') out[s.kind] = {
      framesDecoded: s.framesDecoded || 0, packetsReceived: s.packetsReceived || 0,
      totalSamplesReceived: s.totalSamplesReceived || 0, codec: (report.get(s.codecId) || {}).mimeType || '',
      width: s.frameWidth || 0, height: s.frameHeight || 0,
    };
    if (s.type === 'transport' && s.selectedCandidatePairId) {
      const pair = report.get(s.selectedCandidatePairId);
      const remote = pair && report.get(pair.remoteCandidateId);
      if (remote) out.remote = remote.address || remote.ip || '';
    }
  });
  return out;
}"""


def ready(page: Page) -> None:
    page.wait_for_selector("body[data-ready='true']", state="attached")


def log_in(page: Page, server: Server, username: str, next_path: str) -> None:
    from urllib.parse import quote

    page.goto(f"/login?next={quote(next_path, safe='')}")
    page.fill("#username", username)
    page.fill("#password", server.password)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(re.compile(re.escape(next_path.split("?")[0])))
    ready(page)


def inbound(page: Page) -> dict[str, Any]:
    return page.evaluate(INBOUND) or {}


def wait_playing(page: Page, timeout: float = 15) -> dict[str, Any]:
    expect(page.locator("#player")).to_have_attribute("data-state", "playing", timeout=timeout * 1000)
    deadline = time.monotonic() + timeout
    while True:
        stats = inbound(page)
        if stats.get("video", {}).get("framesDecoded", 0) > 5 and stats.get("audio", {}).get("packetsReceived", 0) > 10:
            return stats
        assert time.monotonic() < deadline, f"no decoded media: {stats}"
        time.sleep(0.2)


def metric(server: Server, name: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(server.url + "/metrics", timeout=5).read().decode()
    match = re.search(rf"^{name}(?:_total)? ([0-9.e+]+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))




def go_live(studio: Page, server: Server, username: str, codec: str = "H264") -> None:
    """Log `username` in at /studio and go live; returns once the studio shows it is live."""
    log_in(studio, server, username, f"/studio?codec=video/{codec}")
    click_go_live(studio)


def click_go_live(studio: Page) -> None:
    """On a signed-in studio: Go live, and return once the studio shows it is live."""
    expect(studio.locator("#studio")).to_be_visible()
    studio.click("#go-live")
    expect(studio.locator("#connection")).not_to_have_attribute("data-state", "connecting", timeout=15_000)
    assert studio.locator("#studio-status").is_hidden(), studio.locator("#studio-status").text_content()
    expect(studio.locator("#connection")).to_have_attribute("data-state", "live", timeout=15_000)


def end_stream(studio: Page) -> None:
    """End the stream from the studio: End, then "End now" in the question the page asks."""
    studio.click("#end")
    studio.click("#end-now")
