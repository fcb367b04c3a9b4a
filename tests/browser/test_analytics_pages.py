"""A channel's analytics page in Chromium: a broadcaster goes live from the studio, viewers watch over
WebRTC (two tabs) and over HLS (one) and leave; the owner's analytics page shows the stream, its peak,
the watch time by transport (WebRTC within 10 % of what the viewers watched) and draws the audience
with uPlot; the CSV downloads; another user is told the page is not theirs; an admin finds the channel
among the site's busiest."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from live_pages import end_stream, go_live, log_in, ready, wait_playing
from page_checks import artifact, check_page
from playwright.sync_api import expect
from test_hls_pages import wait_hls_mode

if TYPE_CHECKING:
    from tests.browser.conftest import Browser, Server

    OpenBrowser = Callable[..., Browser]

pytestmark = pytest.mark.browser

# Pixels of the chart in a series' colour (WebRTC red, HLS blue): the series were drawn, not just the axes.
CHART_INK = """() => {
  const canvas = document.querySelector('#audience-chart canvas');
  if (!canvas || !canvas.width) return {};
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const ink = { webrtc: 0, hls: 0, width: canvas.width };
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] < 128) continue;
    if (data[i] > 150 && data[i + 1] < 90 && data[i + 2] < 90) ink.webrtc += 1;
    if (data[i] < 60 && data[i + 1] < 140 && data[i + 2] > 150) ink.hls += 1;
  }
  return ink;
}"""


def test_the_analytics_page_shows_who_watched_and_draws_it(
        server: Server, open_browser: OpenBrowser, clips: tuple[Path, Path]) -> None:
    name = server.unique_name("stats")
    server.register(name)
    studio = open_browser(media=clips).page
    go_live(studio, server, name)

    audience = open_browser()
    watched = []  # (seconds watched at least, at most) per WebRTC viewer
    tabs = []
    for _ in range(2):
        tab = audience.context.new_page()
        opened = time.monotonic()
        tab.goto(f"/watch/{name}")
        wait_playing(tab)
        tabs.append((tab, opened, time.monotonic()))
    hls = audience.context.new_page()
    hls.goto(f"/watch/{name}?playback=hls")
    wait_hls_mode(hls, timeout=30)
    time.sleep(12)
    # Meanwhile the studio drew how its stream arrives, its own round trip, and the two WebRTC viewers.
    expect(studio.locator("#ingest")).to_be_visible()
    studio.wait_for_function("""() => ['video_kbps', 'fps', 'rtt_ms', 'viewers'].every(
        (key) => document.querySelector(`.ingest-chart[data-key="${key}"] canvas`))""")
    expect(studio.locator('.ingest-chart[data-key="viewers"] .ingest-value')).to_have_text("2")
    assert float(studio.locator('.ingest-chart[data-key="fps"] .ingest-value').inner_text().split()[0]) > 5
    for tab, opened, playing in tabs:
        tab.close()
        closed = time.monotonic()
        watched.append((closed - playing, closed - opened))
    hls.close()
    time.sleep(1.5)  # the node tells the count at most once a second
    end_stream(studio)
    expect(studio.locator("#summary")).to_be_visible(timeout=15_000)

    # The viewing sessions: each tab's, written by the node (WebRTC) and told by the players' beacons,
    # flushed every 5 s (the node looks at its sessions every 5 s: its last word on a closed tab comes
    # within 10 s); the HLS tab's hls.js requests are not a second, silent player.
    deadline = time.monotonic() + 30
    while True:
        status, report = server.call("GET", f"/api/channels/{name}/analytics", token=server.token(name))
        assert status == 200, report
        viewing = report["viewing"]
        if viewing["sessions"]["webrtc"] >= 2 and viewing["sessions"]["hls"] >= 1 and viewing["latency_ms"]["hls"] is not None \
                and viewing["average_session_seconds"] >= 8 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert viewing["sessions"] == {"webrtc": 2, "hls": 1}, viewing
    assert viewing["unique_viewers"] == 3, viewing
    for transport in ("webrtc", "hls"):
        assert 0 < viewing["startup_ms"][transport] < 30_000, viewing
    # The players' own measure: WebRTC's jitter buffer and half the round trip, hls.js's estimate.
    assert 0 < viewing["latency_ms"]["webrtc"] < viewing["latency_ms"]["hls"] < 10_000, viewing
    assert viewing["rebuffering_ratio"] is not None, viewing
    assert viewing["renditions"] and abs(sum(viewing["renditions"].values()) - 1) < 0.01, viewing
    assert 8 <= viewing["average_session_seconds"] <= 60, viewing

    studio.goto(f"/analytics/{name}")
    ready(studio)
    expect(studio.locator("#analytics")).to_be_visible()
    expect(studio.locator("#unique-viewers")).to_have_text("3")
    expect(studio.locator("#sessions")).to_have_text("3 (WebRTC 2, HLS 1)")
    expect(studio.locator("#renditions")).to_contain_text("p ")
    expect(studio.locator("#latency")).to_contain_text("WebRTC")
    expect(studio.locator("#latency")).to_contain_text("HLS")
    least, most = sum(w[0] for w in watched), sum(w[1] for w in watched)
    assert 0.9 * least <= report["watch_seconds"]["webrtc"] <= 1.1 * most, (report["watch_seconds"], watched)
    assert report["watch_seconds"]["hls"] > 0 and report["streams"] == 1, report
    assert report["peak_concurrent"] >= 3, report
    expect(studio.locator("#streams")).to_have_text("1")
    expect(studio.locator("#peak-concurrent")).to_have_text(str(report["peak_concurrent"]))
    studio.wait_for_function(f"() => {{ const ink = ({CHART_INK})(); return ink.webrtc > 20 && ink.hls > 20; }}")
    assert studio.evaluate(CHART_INK)["width"] > 600  # the chart takes the page's width
    studio.screenshot(path=str(artifact("analytics-desktop.png")), full_page=True)
    problems = check_page(studio, "analytics-desktop")

    with studio.expect_download() as download:
        studio.click("#download-csv")
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0].startswith("minute,webrtc_viewers,hls_viewers") and len(lines) >= 2

    # The stream's own report, from the channel's list of streams.
    expect(studio.locator("#stream-list tbody tr")).to_have_count(1)
    studio.click("#stream-list tbody a")
    expect(studio.locator("#analytics-heading")).to_contain_text("stream of")
    expect(studio.locator("#unique-viewers")).to_have_text("3")
    expect(studio.locator("#peak-concurrent")).to_have_text(str(report["peak_concurrent"]))
    assert studio.locator("#period-controls").is_hidden() and studio.locator("#streams-panel").is_hidden()
    problems += check_page(studio, "analytics-stream")
    studio.click("#all-streams")
    expect(studio.locator("#stream-list tbody tr")).to_have_count(1)

    stranger = server.unique_name("nosy")
    server.register(stranger)
    other = open_browser().page
    log_in(other, server, stranger, f"/analytics/{name}")
    expect(other.locator("#analytics-status")).to_contain_text("Only the channel's owner")
    other.goto("/analytics")
    expect(other.locator("#analytics-status")).to_contain_text("Only admins")
    other.close()

    # The admin's view of the whole site: the channel among the busiest, its page a click away.
    admin = open_browser().page
    log_in(admin, server, server.admin, "/admin")
    admin.click("text=Site analytics")
    expect(admin.locator("#analytics-heading")).to_have_text("Site analytics")
    expect(admin.locator("#busiest")).to_contain_text(f"@{name}")
    assert admin.locator("#download-csv").is_hidden()
    problems += check_page(admin, "analytics-site")
    admin.click(f"#busiest >> text=@{name}")
    expect(admin.locator("#analytics-heading")).to_have_text(f"Analytics · @{name}")
    assert not problems, problems
