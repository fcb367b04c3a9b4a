"""HLS of a stream Chromium publishes from /studio: the ladder read by ffprobe, hls.js playing it in
the watch page, and the watch page falling back from WebRTC to HLS by itself when WHEP answers 503,
and back when WebRTC has room again."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from live_pages import go_live, ready, wait_playing
from playwright.sync_api import Page, expect

if TYPE_CHECKING:
    from tests.browser.conftest import Browser, Server

    OpenBrowser = Callable[..., Browser]

pytestmark = pytest.mark.browser

SERVER_SETTINGS = {"MAX_VIEWERS_PER_NODE": "1"}  # a second WebRTC viewer gets 503

HLS_FRAMES = """() => {
  const video = document.querySelector('video[aria-label="Live video (HLS)"]');
  if (!video) return null;
  const quality = video.getVideoPlaybackQuality();
  return { frames: quality.totalVideoFrames, dropped: quality.droppedVideoFrames, time: video.currentTime,
           width: video.videoWidth, height: video.videoHeight, hidden: video.hidden,
           latency: window.tallyPlayer.hls ? window.tallyPlayer.hls.latency : null };
}"""


HLS_REPORT = """() => {
  const player = window.tallyPlayer, playback = player && player.hls, video = playback && playback.video;
  const ranges = (r) => Array.from({ length: r.length }, (_, i) => [r.start(i), r.end(i)]);
  return { state: player && player.box.dataset.state, status: document.querySelector('#player [role=status]')?.textContent,
           errors: playback ? playback.errors : null, level: playback && playback.hls ? playback.hls.currentLevel : null,
           paused: video ? video.paused : null, readyState: video ? video.readyState : null,
           buffered: video ? ranges(video.buffered) : null,
           // The last HLS requests: a short or cached body (transfer 0) tells a cut-off part from a slow one.
           requests: performance.getEntriesByType("resource").filter((e) => e.name.includes("/hls/")).slice(-16)
             .map((e) => [e.name.split("/hls/")[1], e.responseStatus, e.encodedBodySize, e.transferSize, Math.round(e.duration)]) };
}"""


def hls_report(page: Page) -> dict[str, Any]:
    """What the HLS player is doing, for a failure's message: state, hls.js's errors, what is buffered."""
    return dict(page.evaluate(HLS_REPORT))


def wait_hls_mode(page: Page, timeout: float = 15) -> None:
    """Waits until the watch page plays HLS (its first frame is showing)."""
    try:
        expect(page.locator("#player")).to_have_attribute("data-mode", "hls", timeout=timeout * 1000)
    except AssertionError as failed:
        raise AssertionError(f"HLS did not start: {hls_report(page)}") from failed


def hls_frames_advance(page: Page, timeout: float = 30) -> dict[str, Any]:
    """Waits until the HLS video has shown frames and its time moves on; returns the last reading."""
    deadline = time.monotonic() + timeout
    first = None
    while True:
        now = page.evaluate(HLS_FRAMES)
        if now and now["frames"] > 0 and not now["hidden"]:
            if first is None:
                first = now
            elif now["frames"] >= first["frames"] + 30 and now["time"] > first["time"] + 1.5:
                return dict(now)
        assert time.monotonic() < deadline, f"HLS frames did not advance: {first} -> {now}; {hls_report(page)}"
        time.sleep(0.25)


def probe_ladder(server: Server, name: str) -> list[dict[str, Any]]:
    master = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_programs",
         f"{server.url}/hls/{name}/index.m3u8"],
        capture_output=True, text=True, timeout=90, check=True,
    )
    return list(json.loads(master.stdout)["streams"])


def segment_durations(server: Server, name: str, count: int = 5, timeout: float = 30) -> list[float]:
    """EXTINF of the top rendition's complete segments once it lists `count`, leaving out the first
    (it starts wherever the on-demand ladder caught the stream, and under load Chromium's first frames
    come in a burst after a pause) and segments cut short by a new init segment (Chromium changes
    resolution under load: a new EXT-X-MAP)."""
    import urllib.request

    master = urllib.request.urlopen(f"{server.url}/hls/{name}/index.m3u8", timeout=30).read().decode()
    uri = next(line for line in master.splitlines() if line and not line.startswith("#"))
    deadline = time.monotonic() + timeout
    while True:
        lines = urllib.request.urlopen(f"{server.url}/hls/{name}/{uri}", timeout=30).read().decode().splitlines()
        durations = []
        for i, line in enumerate(lines):
            ends_at_map = any(later.startswith("#EXT-X-MAP") for later in lines[i + 1 : i + 4])
            if line.startswith("#EXTINF:") and not ends_at_map and lines[i + 1] != "s0.m4s":
                durations.append(float(line[8:].rstrip(",")))
        if len(durations) >= count:
            return durations
        assert time.monotonic() < deadline, lines
        time.sleep(0.5)


def test_a_studio_stream_is_an_hls_ladder_that_hls_js_plays(open_browser: OpenBrowser, server: Server, clips: Any) -> None:
    name = server.unique_name("hlsca")
    server.register(name)
    studio = open_browser(clips)
    go_live(studio.page, server, name)
    streams = probe_ladder(server, name)
    video = sorted({(s["width"], s["height"]) for s in streams if s["codec_type"] == "video"}, reverse=True)
    audio = {s["codec_name"] for s in streams if s["codec_type"] == "audio"}
    # The source passed through at the size Chromium sends (640x360, or less when the machine is busy:
    # its CPU adaptation scales the camera down) and 180p encoded from it.
    top = video[0]
    assert 320 <= top[0] <= 640 and abs(top[0] / top[1] - 16 / 9) < 0.02, streams
    assert video == ([top, (320, 180)] if top[0] > 320 else [top]), streams
    assert {s["codec_name"] for s in streams if s["codec_type"] == "video"} == {"h264"} and audio == {"aac"}
    # Chromium is asked for a keyframe just before each cut: segments of about 2 s (HLS_SEGMENT_SECONDS),
    # not its own keyframe interval (5-14 s when nothing asked in time).
    # (One segment of 0.44 s, right after the first, shows up in full CI runs and not alone: an open
    # question in issue 6's note. A short segment is valid HLS; long ones were the defect.)
    durations = segment_durations(server, name)
    assert all(d <= 3.0 for d in durations), durations
    assert abs(sorted(durations)[len(durations) // 2] - 2.0) <= 0.2, durations
    viewer = open_browser()
    viewer.page.goto(f"/watch/{name}?playback=hls")
    ready(viewer.page)
    wait_hls_mode(viewer.page)
    expect(viewer.page.locator(".player-mode")).to_have_text("HLS · low latency")
    seen = hls_frames_advance(viewer.page)
    assert seen["width"] >= 320, seen  # the source (Chromium scales it under load) or 180p
    # hls.js's own latency: PART-HOLD-BACK (1 s) plus a part in flight; it stalled and reloaded its
    # first segment in a loop (6-12 s behind) while the playlist rounded durations up.
    assert seen["latency"] is not None and seen["latency"] < 3.0, seen


def test_the_watch_page_falls_back_to_hls_when_whep_is_full_and_comes_back(
    open_browser: OpenBrowser, server: Server, clips: Any
) -> None:
    name = server.unique_name("hlsfb")
    server.register(name)
    studio = open_browser(clips)
    go_live(studio.page, server, name)
    first = open_browser()
    first.page.goto(f"/watch/{name}")
    ready(first.page)
    wait_playing(first.page)
    expect(first.page.locator(".player-mode")).to_have_text("WebRTC · real time")
    # The only WebRTC place is taken: the second viewer's WHEP POST gets 503 and it plays HLS.
    second = open_browser()
    second.page.goto(f"/watch/{name}")
    ready(second.page)
    wait_hls_mode(second.page, timeout=20)
    expect(second.page.locator(".player-mode")).to_have_text("HLS · low latency")
    assert "no room" in (second.page.locator(".player-mode").get_attribute("title") or "")
    hls_frames_advance(second.page)
    # The first viewer leaves; the second moves back to WebRTC by itself.
    first.page.goto("about:blank")
    expect(second.page.locator("#player")).to_have_attribute("data-mode", "webrtc", timeout=40_000)
    wait_playing(second.page)
    assert second.page.evaluate("() => window.tallyPlayer.hls") is None
