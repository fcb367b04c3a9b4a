"""LL-DASH of a stream Chromium publishes from /studio, played by dash.js in the watch page (the
server's PLAYBACK_ORDER puts DASH first, as ?playback=dash would): frames advance at a low latency the player reports itself, renditions switch, and
the ended stream plays to its end."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from live_pages import end_stream, go_live, ready
from playwright.sync_api import Page, expect

if TYPE_CHECKING:
    from tests.browser.conftest import Browser, Server

    OpenBrowser = Callable[..., Browser]

pytestmark = pytest.mark.browser

SERVER_SETTINGS = {"PLAYBACK_ORDER": "dash,webrtc"}
SHAKA = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "shaka-player" / "dist" / "shaka-player.compiled.js"

DASH_STATE = """() => {
  const player = window.tallyPlayer, playback = player && player.hls, video = playback && playback.video;
  if (!video) return { state: player && player.box.dataset.state };
  const quality = video.getVideoPlaybackQuality();
  const dash = playback.player;
  const ranges = (r) => Array.from({ length: r.length }, (_, i) => [r.start(i), r.end(i)]);
  return { state: player.box.dataset.state, mode: player.box.dataset.mode, frames: quality.totalVideoFrames,
           time: video.currentTime, width: video.videoWidth, height: video.videoHeight, hidden: video.hidden,
           latency: playback.latency, lowLatency: dash ? dash.getLowLatencyModeEnabled() : null,
           level: playback.level, errors: playback.errors, buffered: ranges(video.buffered), ended: video.ended,
           duration: video.duration };
}"""


def state(page: Page) -> dict[str, Any]:
    return dict(page.evaluate(DASH_STATE))


def frames_advance(page: Page, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    first = None
    while True:
        now = state(page)
        if now.get("frames") and not now["hidden"]:
            if first is None:
                first = now
            elif now["frames"] >= first["frames"] + 30 and now["time"] > first["time"] + 1.5:
                return now
        assert time.monotonic() < deadline, f"DASH frames did not advance: {first} -> {now}"
        time.sleep(0.25)


def test_dash_js_plays_a_studio_stream_at_low_latency_switches_renditions_and_plays_to_the_end(
    open_browser: OpenBrowser, server: Server, clips: Any
) -> None:
    name = server.unique_name("dashp")
    server.register(name)
    studio = open_browser(clips)
    go_live(studio.page, server, name)
    viewer = open_browser()
    page = viewer.page
    page.goto(f"/watch/{name}")  # DASH by the server's order
    ready(page)
    try:
        expect(page.locator("#player")).to_have_attribute("data-mode", "dash", timeout=40_000)
    except AssertionError as failed:
        raise AssertionError(f"DASH did not start: {state(page)}") from failed
    expect(page.locator(".player-mode")).to_have_text("DASH · low latency")
    seen = frames_advance(page)
    assert seen["lowLatency"] is True, seen  # dash.js took the MPD's low-latency signals
    # dash.js's own latency (on the UTCTiming clock) settles under 3 s: it reads the segment being made.
    deadline = time.monotonic() + 20
    latencies = []
    while time.monotonic() < deadline:
        latency = state(page)["latency"]
        if latency is not None:
            latencies.append(latency)
        if len(latencies) >= 8 and max(latencies[-4:]) < 3.0:
            break
        time.sleep(0.5)
    assert latencies and max(latencies[-4:]) < 3.0, latencies
    # Renditions: the quality menu lists them; choosing the lowest (180p) plays it.
    options = page.locator("#player-quality option")
    expect(options).not_to_have_count(0)
    labels = options.all_text_contents()
    assert "180p" in labels, labels
    page.select_option("#player-quality", label="180p")
    deadline = time.monotonic() + 30
    while (now := state(page))["height"] != 180:
        assert time.monotonic() < deadline, f"did not switch to 180p: {now}, the menu: {labels}"
        time.sleep(0.25)
    frames_advance(page)
    # Shaka Player plays the same MPD, live, in its low-latency mode, a few seconds behind at most.
    if page.evaluate("() => typeof shaka === 'undefined'"):
        page.evaluate(SHAKA.read_text())
    page.evaluate(SHAKA_PLAYER, f"/dash/{name}/manifest.mpd")
    deadline = time.monotonic() + 30
    first = None
    while True:
        shaka = page.evaluate("() => window.shakaReport()")
        if shaka["frames"] and first is None:
            first = shaka
        if first and shaka["frames"] >= first["frames"] + 30 and shaka["time"] > first["time"] + 1.5:
            break
        assert time.monotonic() < deadline and not shaka["error"], f"Shaka did not play: {shaka}"
        time.sleep(0.25)
    assert shaka["live"] and shaka["lowLatency"] and shaka["latency"] is not None and shaka["latency"] < 4, shaka
    page.evaluate("() => window.shakaPlayer.destroy()")
    # The stream ends: the MPD turns static and dash.js plays what it has to the end. (The watch page
    # itself stops its player when the chat says the stream ended; a bare DashPlayback shows the MPD's end.)
    page.evaluate(BARE_PLAYER, f"/dash/{name}/manifest.mpd")
    deadline = time.monotonic() + 30
    while (bare := page.evaluate("() => window.bare.report()"))["time"] < 2:
        assert time.monotonic() < deadline, f"the bare dash.js did not play: {bare}"
        time.sleep(0.25)
    end_stream(studio.page)
    expect(page.locator("#player")).to_have_attribute("data-state", "ended", timeout=30_000)
    deadline = time.monotonic() + 40
    while not (bare := page.evaluate("() => window.bare.report()"))["endedEvent"]:
        assert time.monotonic() < deadline, f"dash.js did not play to the end: {bare}"
        time.sleep(0.25)
    # It played up to the end of the static MPD's last segment (within a part).
    assert bare["ended"] and abs(bare["time"] - bare["duration"]) < 0.5, bare
    assert bare["errors"] == [], bare


BARE_PLAYER = """async (url) => {
  const { DashPlayback } = await import("/static/js/dash_playback.js");
  const video = document.createElement("video");
  video.muted = true;
  document.body.append(video);
  const report = { endedEvent: false, errors: [] };
  const playback = new DashPlayback(video, url, {
    onError: (detail) => { if (/the stream ended/.test(detail)) report.endedEvent = true; else report.errors.push(detail); },
  });
  await playback.start();
  window.bare = { report: () => ({ ...report, time: video.currentTime, duration: video.duration, ended: video.ended }) };
}"""

SHAKA_PLAYER = """async (url) => {
  shaka.polyfill.installAll();
  const video = document.createElement("video");
  video.muted = true;
  document.body.append(video);
  const player = new shaka.Player();
  await player.attach(video);
  player.configure({ streaming: { lowLatencyMode: true } });
  const report = { error: null };
  player.addEventListener("error", (event) => { report.error = String(event.detail && event.detail.code); });
  window.shakaPlayer = player;
  window.shakaReport = () => ({
    ...report, frames: video.getVideoPlaybackQuality().totalVideoFrames, time: video.currentTime,
    live: player.isLive(), lowLatency: player.getConfiguration().streaming.lowLatencyMode,
    latency: Number.isFinite(player.getStats().liveLatency) ? player.getStats().liveLatency : null,
  });
  await player.load(url);
  video.play().catch(() => null);
}"""
