"""Going live from /studio and watching on /watch in real Chromium, through the real server's SFU.

The publisher's fake camera and microphone play a known clip; viewers decode it (getStats), for H.264
and for VP8. The server must forward without creating any decoder or encoder (its /metrics count them).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import Page, expect

if TYPE_CHECKING:
    from tests.browser.conftest import Browser, Server

    OpenBrowser = Callable[..., Browser]

pytestmark = pytest.mark.browser

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
  });
  return out;
}"""


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("clips")
    video, audio = folder / "camera.y4m", folder / "microphone.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-t", "4", "-pix_fmt", "yuv420p", str(video)],
        check=True,
    )
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "4", str(audio)], check=True)
    return video, audio


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


@pytest.mark.parametrize("codec", ["H264", "VP8"])
def test_go_live_in_the_studio_and_watch_with_sub_second_delay(
    server: Server, open_browser: OpenBrowser, clips: tuple[Path, Path], codec: str
) -> None:
    name = server.unique_name("caster")
    server.register(name)
    studio = open_browser(media=clips).page
    log_in(studio, server, name, f"/studio?codec=video/{codec}")
    expect(studio.locator("#studio")).to_be_visible()
    studio.click("#go-live")
    expect(studio.locator("#connection")).not_to_have_attribute("data-state", "connecting", timeout=15_000)
    assert studio.locator("#studio-status").is_hidden(), studio.locator("#studio-status").text_content()
    expect(studio.locator("#connection")).to_have_attribute("data-state", "live", timeout=15_000)
    status, channel = server.call("GET", f"/api/channels/{name}")
    assert status == 200 and channel["is_live"] is True

    viewer = open_browser().page
    viewer.goto(f"/watch/{name}")
    stats = wait_playing(viewer)
    assert stats["video"]["codec"] == f"video/{codec}"
    # The clip's 16:9 picture (Chromium may scale it down while its bandwidth estimate ramps up).
    assert stats["video"]["width"] * 9 == stats["video"]["height"] * 16 and stats["video"]["width"] >= 320, stats
    first = stats["video"]["framesDecoded"]
    time.sleep(1.5)
    later = inbound(viewer)
    assert later["video"]["framesDecoded"] > first + 20, (first, later)  # ~30 fps keeps arriving
    assert later["audio"]["totalSamplesReceived"] > stats["audio"]["totalSamplesReceived"]  # audio plays

    # A viewer joining mid-stream waits for a keyframe, which the SFU asks the publisher for.
    joiner = open_browser().page
    joiner.goto(f"/watch/{name}")
    started = time.monotonic()
    wait_playing(joiner)
    assert time.monotonic() - started < 5

    deadline = time.monotonic() + 10
    while server.call("GET", f"/api/channels/{name}")[1]["viewer_count"] != 2:
        assert time.monotonic() < deadline, "the viewer count never reached 2"
        time.sleep(0.2)
    expect(studio.locator("#studio-viewers")).to_have_text("2", timeout=5_000)

    # Forwarding only: nothing in the server decoded or encoded a frame.
    assert metric(server, "tally_sfu_packets_out") > 0
    assert metric(server, "tally_sfu_stock_decoders") == 0
    assert metric(server, "tally_sfu_stock_encoders") == 0

    studio.click("#end")
    expect(viewer.locator("#player")).to_have_attribute("data-state", re.compile("offline|reconnecting|connecting"), timeout=10_000)
    expect(viewer.locator("#player")).to_have_attribute("data-state", "offline", timeout=15_000)
    assert server.call("GET", f"/api/channels/{name}")[1]["is_live"] is False
