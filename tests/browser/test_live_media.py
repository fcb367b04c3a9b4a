"""Going live from /studio and watching on /watch in real Chromium, through the real server's SFU.

The publisher's fake camera and microphone play a known clip; viewers decode it (getStats), for H.264
and for VP8. The server must forward without creating any decoder or encoder (its /metrics count them).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from live_pages import end_stream, go_live, inbound, metric, wait_playing
from playwright.sync_api import expect

if TYPE_CHECKING:
    from tests.browser.conftest import Browser, Server

    OpenBrowser = Callable[..., Browser]

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("codec", ["H264", "VP8"])
def test_go_live_in_the_studio_and_watch_with_sub_second_delay(
    server: Server, open_browser: OpenBrowser, clips: tuple[Path, Path], codec: str
) -> None:
    name = server.unique_name("caster")
    server.register(name)
    studio = open_browser(media=clips).page
    go_live(studio, server, name, codec)
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

    end_stream(studio)
    expect(viewer.locator("#player")).to_have_attribute("data-state", "ended", timeout=5_000)  # the end card
    assert server.call("GET", f"/api/channels/{name}")[1]["is_live"] is False
