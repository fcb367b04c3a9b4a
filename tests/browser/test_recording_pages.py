"""Recording a stream Chromium publishes from /studio, checked with ffprobe/ffmpeg, then played back
(with seeking) on /recordings/{id} and listed on the channel page."""

from __future__ import annotations

import base64
import math
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.request import urlopen

import av
import pytest
from live_pages import click_go_live, end_stream, go_live, log_in
from page_checks import check_page
from playwright.sync_api import expect

from media_probe import decode_errors, probe

if TYPE_CHECKING:
    from tests.browser.conftest import Browser, Server

    OpenBrowser = Callable[..., Browser]

pytestmark = pytest.mark.browser


def wait_ready(server: Server, name: str, timeout: float = 40) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, listing = server.call("GET", f"/api/channels/{name}/recordings")
        assert status == 200
        items = listing["items"]
        if items and items[0]["state"] == "ready":
            return dict(items[0])
        assert not items or items[0]["state"] != "failed", items
        assert time.monotonic() < deadline, items
        time.sleep(0.3)


def _live_for(studio: Any, seconds: float) -> None:
    time.sleep(seconds)
    end_stream(studio)


def test_a_studio_stream_is_recorded_and_plays_back_with_seeking(
    server: Server, open_browser: OpenBrowser, clips: tuple[Path, Path], tmp_path: Path
) -> None:
    name = server.unique_name("recorder")
    server.register(name)
    status, _ = server.call("PATCH", f"/api/channels/{name}", {"record_streams": True}, token=server.token(name))
    assert status == 200
    studio = open_browser(media=clips).page
    log_in(studio, server, name, "/studio?codec=video/H264")
    clicked = time.monotonic()  # an upper bound on the recording's start: before Go live...
    click_go_live(studio)
    shown = time.monotonic()  # ...and a lower one: the studio says Live up to a poll (1 s) after media flows
    expect(studio.locator("#record-state")).to_be_visible(timeout=10_000)  # the studio shows it records
    time.sleep(10.0 - (time.monotonic() - shown))
    end_stream(studio)
    ended = time.monotonic()
    ready = wait_ready(server, name)

    target = tmp_path / "recording.mp4"
    with urlopen(ready["playback_url"]) as response:
        target.write_bytes(response.read())
    info = probe(target)
    assert info.codec("video") == "h264" and info.codec("audio") == "opus"  # passed through, not transcoded
    # As long as it was live, within half a second.
    assert ended - shown - 0.5 <= info.duration <= ended - clicked + 0.5, (info.duration, ended - shown, ended - clicked)
    assert abs(info.start("video") - info.start("audio")) < 0.1, info.streams
    assert decode_errors(target) == ""

    # The channel page lists it with its thumbnail; its page plays it, and seeking works.
    viewer = open_browser().page
    viewer.goto(f"/watch/{name}")
    entry = viewer.locator(f".recording[data-id='{ready['id']}']")
    expect(entry).to_be_visible(timeout=10_000)
    expect(entry.locator("img")).to_have_js_property("complete", True)
    assert entry.locator("img").evaluate("img => img.naturalWidth") == 320
    entry.locator("a").click()
    expect(viewer).to_have_url(f"{server.url}/recordings/{ready['id']}")
    video = viewer.locator("#playback")
    video.evaluate("v => { v.muted = true; return v.play(); }")
    viewer.wait_for_function("() => document.querySelector('#playback').currentTime > 1", timeout=15_000)
    assert abs(video.evaluate("v => v.duration") - ready["duration"]) < 0.2
    video.evaluate("v => { v.currentTime = 7; }")
    viewer.wait_for_function(
        "() => { const v = document.querySelector('#playback'); return !v.seeking && v.currentTime > 7.3; }", timeout=15_000
    )
    frames = video.evaluate("v => v.getVideoPlaybackQuality().totalVideoFrames")
    assert frames > 30
    # The recording's page and the channel page with it listed pass the page checks, here and on a phone.
    problems = check_page(viewer, "recording-desktop")
    phone = open_browser(size=(360, 740), phone=True).page
    for path, label in ((f"/recordings/{ready['id']}", "recording-phone"), (f"/watch/{name}", "watch-recordings-phone")):
        phone.goto(path)
        problems += check_page(phone, label)
    assert not problems, "\n".join(problems)


SYNC_PERIOD = 2.1


@pytest.fixture(scope="module")
def sync_clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A camera that shows white for 100 ms every ~2 s (black otherwise) and a microphone that beeps at
    the same moments: lip sync can be measured in the recording."""
    folder = tmp_path_factory.mktemp("sync")
    video, audio = folder / "flash.y4m", folder / "beep.wav"
    fps, width, height = 30, 320, 180
    with video.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(round(SYNC_PERIOD * fps) - 1):
            luma = 235 if fps <= i < fps + 3 else 16  # white for 3 frames from t = 1 s
            out.write(b"FRAME\n" + bytes([luma]) * (width * height) + bytes([128]) * (width * height // 2))
    rate = 48000
    samples = bytearray()
    # Chromium's fake camera shows one frame more per loop of a y4m file, and its fake microphone plays
    # whole 10 ms chunks: with 62 frames and 2.1 s of sound both loop every 2.1 s and stay in step.
    for i in range(round(SYNC_PERIOD * rate)):
        beep = rate <= i < rate + rate // 10  # 1 kHz for 100 ms from t = 1 s
        samples += int(20000 * math.sin(2 * math.pi * 1000 * i / rate) if beep else 0).to_bytes(2, "little", signed=True)
    with wave.open(str(audio), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(samples))
    return video, audio


def flashes(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        out, bright = [], False
        for frame in container.decode(stream):
            plane = frame.reformat(format="gray").planes[0]
            sample = bytes(plane)[:: 97]  # a spread of pixels is enough to tell white from black
            mean = sum(sample) / len(sample)
            if mean > 128 and not bright:
                out.append(float(frame.time))
            bright = mean > 128
        return out


def beeps(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        out, loud, position = [], False, None
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        for decoded in container.decode(stream):
            start = float(decoded.time) if decoded.time is not None else (position or 0.0)
            pcm = b"".join(bytes(f.planes[0])[: f.samples * 2] for f in resampler.resample(decoded))
            data = memoryview(pcm).cast("h")
            rate = 48000
            window = 96  # 2 ms
            for i in range(0, len(data) - window, window):
                level = max(abs(v) for v in data[i:i + window])
                if level > 3000 and not loud:
                    out.append(start + i / rate)
                loud = level > 3000
            position = start + len(data) / rate
        return out


# The camera and microphone the studio opened, kept where the test can reach them.
KEEP_CAPTURE = """(() => {
  const open = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const stream = await open(constraints);
    window.__captured = stream;
    return stream;
  };
})();"""

# Chromium's own recording of what its camera and microphone capture (MediaRecorder on the same tracks
# the studio publishes), by their capture timestamps. Its audio is PCM: an Opus encoder would add its
# own delay (with Opus, Chromium's recording put sound 40 ms later than the capture timestamps do).
RECORD_CAPTURE = """async (seconds) => {
  const stream = new MediaStream(window.__captured.getTracks());
  const recorder = new MediaRecorder(stream, { mimeType: "video/webm;codecs=vp8,pcm" });
  const chunks = [];
  recorder.ondataavailable = (event) => chunks.push(event.data);
  const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
  recorder.start();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  recorder.stop();
  await stopped;
  const bytes = new Uint8Array(await new Blob(chunks).arrayBuffer());
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}"""


def lip_offsets(path: Path) -> list[float]:
    """Sound minus picture (seconds) of each flash against the beep nearest it, sorted."""
    seen, heard = flashes(path), beeps(path)
    assert len(seen) >= 3 and len(heard) >= 3, (seen, heard)
    # (a flash at the very start may have no beep recorded)
    offsets = sorted(d for d in (min((b - f for b in heard), key=abs) for f in seen) if abs(d) < 0.5)
    assert len(offsets) >= 3, (seen, heard)
    return offsets


def test_a_studio_recording_keeps_lip_sync(
    server: Server, open_browser: OpenBrowser, sync_clips: tuple[Path, Path], tmp_path: Path
) -> None:
    name = server.unique_name("sync")
    server.register(name)
    server.call("PATCH", f"/api/channels/{name}", {"record_streams": True}, token=server.token(name))
    browser = open_browser(media=sync_clips)
    browser.context.add_init_script(KEEP_CAPTURE)
    studio = browser.page
    go_live(studio, server, name)
    began = time.monotonic()
    captured = tmp_path / "captured.webm"
    captured.write_bytes(base64.b64decode(studio.evaluate(RECORD_CAPTURE, 7)))
    time.sleep(max(0.0, 9.0 - (time.monotonic() - began)))
    end_stream(studio)
    ready = wait_ready(server, name)
    target = tmp_path / "sync.mp4"
    with urlopen(ready["playback_url"]) as response:
        target.write_bytes(response.read())
    offsets, source = lip_offsets(target), lip_offsets(captured)
    median, source_median = offsets[len(offsets) // 2], source[len(source) // 2]
    print(f"lip sync (sound minus picture): recording {offsets}, as captured {source}")
    # The fake camera and microphone loop their files each on its own clock: how far apart they run
    # differs from run to run (-10 to +10 ms as captured here, and the recording followed: +5 to +25 ms;
    # the recording was -55 ms once with the other core busy, run Q of RELIABILITY.md). What the
    # recording must keep is the sync the browser captured, which Chromium's own recording of the same
    # tracks shows (the recording measured 12 to 15 ms later, with the other core busy or not).
    assert abs(median - source_median) < 0.035, (offsets, source)
    assert abs(median) < 0.1, offsets  # and no source is that far off
    assert offsets[-1] - offsets[0] < 0.03, offsets  # and it does not drift
