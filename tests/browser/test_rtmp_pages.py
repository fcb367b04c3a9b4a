"""RTMP into the real server, watched in Chromium: FFmpeg publishes H.264 + AAC as OBS would (over
RTMP without B-frames, over RTMPS with them), the studio and Settings show both URLs, a WHEP viewer on the
watch page shows every frame in order and hears the audio, hls.js plays the ladder, and the recording
(H.264 and the encoder's own AAC) decodes.

The source's brightness counts its frames (up by one step a frame, wrapping every 32): the page reads
it from each frame it shows, so a frame shown out of order is seen (frames the page skips while it is
busy are not counted against the server).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.request import urlopen

import pytest
from live_pages import inbound, log_in, wait_playing
from page_checks import artifact, check_page
from media_probe import decode_errors, probe
from playwright.sync_api import expect
from support import free_port
from test_hls_pages import hls_frames_advance, wait_hls_mode
from test_recording_pages import wait_ready
from tls_files import self_signed

if TYPE_CHECKING:
    from tests.browser.conftest import Browser, Server

    OpenBrowser = Callable[..., Browser]

pytestmark = pytest.mark.browser

RTMP_PORT, RTMPS_PORT = free_port(), free_port()
_CERT, _KEY = self_signed(Path(tempfile.mkdtemp(prefix="rtmps-")))
SERVER_SETTINGS = {"RTMP_PORT": str(RTMP_PORT), "RTMPS_PORT": str(RTMPS_PORT), "RTMPS_CERT": str(_CERT),
                   "RTMPS_KEY": str(_KEY)}
PORTS = {"rtmp": RTMP_PORT, "rtmps": RTMPS_PORT}

# Each frame the WebRTC video shows: its mean brightness (8x8 samples), for `count` frames or 10 s.
SHOWN = """(count) => new Promise((done) => {
  const video = document.querySelector('video[aria-label="Live video"]');
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = 8;
  const context = canvas.getContext('2d', { willReadFrequently: true });
  const seen = [];
  const step = () => {
    context.drawImage(video, 0, 0, 8, 8);
    const data = context.getImageData(0, 0, 8, 8).data;
    let sum = 0;
    for (let i = 0; i < data.length; i += 4) sum += data[i];
    seen.push(Math.round(sum / 64));
    if (seen.length < count) video.requestVideoFrameCallback(step); else done(seen);
  };
  video.requestVideoFrameCallback(step);
  setTimeout(() => done(seen), 10000);
})"""


@contextmanager
def encoder(key: str, bframes: int, scheme: str = "rtmp", seconds: int = 60,
            gop: int = 60) -> Iterator[subprocess.Popen[bytes]]:
    """FFmpeg publishing a frame-counting picture and a tone, like OBS with x264 (keyframe every 2 s, or
    every `gop` frames) and 48 kHz stereo AAC."""
    process = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
         "-f", "lavfi", "-i", "color=c=black:size=640x360:rate=30,geq=lum='mod(N*8\\,256)':cb=128:cr=128",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-c:v", "libx264", "-preset", "veryfast", "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-bf", str(bframes), "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-ac", "2", "-b:a", "128k", "-t", str(seconds), "-f", "flv",
         f"{scheme}://127.0.0.1:{PORTS[scheme]}/live/{key}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()


def wait_live(server: Server, name: str, process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not server.call("GET", f"/api/channels/{name}")[1]["is_live"]:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else "ffmpeg exited"
        assert time.monotonic() < deadline, "the channel did not go live"
        time.sleep(0.2)


def backward_steps(shown: list[int]) -> list[tuple[int, int]]:
    """Pairs of shown frames where the count went back (a wrap from bright to dark is not one)."""
    return [(a, b) for a, b in zip(shown, shown[1:]) if (b - a) % 256 > 128 and not (a > 200 and b < 60)]


def test_the_studio_and_settings_show_the_rtmp_url(
        server: Server, open_browser: OpenBrowser, clips: tuple[Path, Path]) -> None:
    name = server.unique_name("rtmpurl")
    server.register(name)
    page = open_browser(media=clips).page
    log_in(page, server, name, "/studio")
    page.locator("summary", has_text="Stream from OBS").click()
    expect(page.locator("#rtmp-url")).to_have_value(f"rtmp://127.0.0.1:{RTMP_PORT}/live")
    expect(page.locator("#rtmps-url")).to_have_value(f"rtmps://127.0.0.1:{RTMPS_PORT}/live")
    page.goto("/settings")
    expect(page.locator("#rtmp-url")).to_have_value(f"rtmp://127.0.0.1:{RTMP_PORT}/live")
    expect(page.locator("#rtmps-url")).to_have_value(f"rtmps://127.0.0.1:{RTMPS_PORT}/live")
    expect(page.locator("#whip-url")).to_have_value(f"{server.url}/whip/{name}")


@pytest.mark.parametrize(("scheme", "bframes"), [("rtmp", 0), ("rtmps", 2)])
def test_an_rtmp_stream_plays_in_order_over_webrtc_and_hls_and_is_recorded(
        server: Server, open_browser: OpenBrowser, scheme: str, bframes: int, tmp_path: Path) -> None:
    name = server.unique_name("rtmp")
    server.register(name)
    token = server.token(name)
    assert server.call("PATCH", f"/api/channels/{name}", {"record_streams": True}, token=token)[0] == 200
    key = server.call("GET", "/api/me/stream-key", token=token)[1]["key"]
    with encoder(key, bframes, scheme) as process:
        wait_live(server, name, process)
        viewer = open_browser().page
        viewer.goto(f"/watch/{name}")
        stats = wait_playing(viewer)
        assert stats["video"]["codec"] == "video/H264" and stats["audio"]["codec"] == "audio/opus", stats
        assert (stats["video"]["width"], stats["video"]["height"]) == (640, 360)
        shown: list[int] = viewer.evaluate(SHOWN, 150)
        assert len(shown) == 150, f"{len(shown)} frames shown in 10 s"
        assert not backward_steps(shown), shown
        later = inbound(viewer)
        assert later["audio"]["totalSamplesReceived"] > stats["audio"]["totalSamplesReceived"] + 48_000  # the tone
        viewer.close()

        hls = open_browser().page
        hls.goto(f"/watch/{name}?playback=hls")
        wait_hls_mode(hls, timeout=30)
        reading: dict[str, Any] = hls_frames_advance(hls)
        assert reading["width"] > 0, reading
        process.terminate()

    recording = wait_ready(server, name)
    target = tmp_path / "recording.mp4"
    with urlopen(recording["playback_url"]) as response:
        target.write_bytes(response.read())
    info = probe(target)
    assert info.codec("video") == "h264" and info.codec("audio") == "aac" and info.duration > 10, info
    assert abs(info.start("video") - info.start("audio")) < 0.1, info.streams
    assert decode_errors(target) == ""


def test_the_studio_shows_how_an_rtmp_stream_arrives_and_says_what_is_wrong(
        server: Server, open_browser: OpenBrowser, clips: tuple[Path, Path]) -> None:
    """An encoder set to a keyframe every 10 s (300 frames at 30 fps): the studio draws the stream's
    bitrate, frame rate, keyframe interval, loss and viewers, and tells the broadcaster to set 2 s."""
    name = server.unique_name("health")
    server.register(name)
    key = server.call("GET", "/api/me/stream-key", token=server.token(name))[1]["key"]
    studio = open_browser(media=clips).page
    log_in(studio, server, name, "/studio")
    assert studio.locator("#ingest").is_hidden()  # nothing arrives yet
    with encoder(key, 0, gop=300, seconds=90) as process:
        wait_live(server, name, process)
        expect(studio.locator("#ingest")).to_be_visible(timeout=15_000)
        expect(studio.locator("#ingest .ingest-warnings")).to_contain_text(
            "Keyframes every 10 s: set 2 s in your encoder", timeout=30_000)
        studio.wait_for_function("() => document.querySelectorAll('#ingest .ingest-chart canvas').length >= 5")

        def value(key: str) -> float:
            return float(studio.locator(f'.ingest-chart[data-key="{key}"] .ingest-value').inner_text().split()[0])

        # A flat picture costs x264 next to nothing between keyframes 10 s apart: a few kbit/s, said too.
        assert 0 < value("video_kbps") < 10_000, value("video_kbps")
        expect(studio.locator("#ingest .ingest-warnings")).to_contain_text("Video arrives at only")
        assert 24 <= value("fps") <= 36, value("fps")
        assert value("loss_percent") == 0  # RTMP is TCP: nothing goes missing
        assert studio.locator('.ingest-chart[data-key="rtt_ms"]').count() == 0  # OBS's round trip is not ours to see
        studio.screenshot(path=str(artifact("studio-ingest-health.png")), full_page=True)
        problems = check_page(studio, "studio-ingest-health")
        process.terminate()
        expect(studio.locator("#ingest")).to_be_hidden(timeout=20_000)
    assert not problems, problems
