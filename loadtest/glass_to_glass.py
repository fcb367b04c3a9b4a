"""Benchmark: glass-to-glass latency in Chromium, through the SFU, through LL-HLS (hls.js), through
LL-DASH (dash.js), and, as a baseline, browser to browser.

    .venv/bin/python loadtest/glass_to_glass.py --rounds 3 --seconds 10 [--load 50]

A publisher page paints the wall clock as a barcode into a 1280x720 canvas at 30 fps and publishes
`canvas.captureStream()` over WHIP with the studio's own client code (`/static/js/webrtc.js`); a viewer
page plays it in the real `/watch/{channel}` player and reads the barcode back from every decoded
frame (`loadtest/barcode.js`). Latency = viewer clock at the frame's display time minus the painted
time, so it covers capture, encode, pacing, the network, the SFU, the jitter buffer, decode and
render. The baseline sends the same canvas straight from one page to another over a loopback peer
connection, with no SFU, in the same run: the difference is what the SFU adds. `--load N` adds N lean
subscribers (sfu_forwarding.py) so the SFU is busy while we measure.

Path `turn`: the same WHEP viewer, but allowed relay candidates only, through a real coturn on loopback
(Debian's, started from turn/turnserver.conf with the credentials the server issues): what a viewer
behind a strict firewall sees, against the `sfu` path's direct one in the same run, and coturn's own
CPU per relayed viewer over the measurement.

`--publisher aiortc` publishes from a third-party WHIP client instead of Chromium: aiortc (VP8 or
H.264 by `--codecs`) in a child process, painting the same barcode into 1280x720 frames
(rtmp_glass_to_glass.py's painter) and a tone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from harness import http, percentile, server  # noqa: E402

sys.path.append(str(HERE.parent / "tests"))
from turn_server import TurnServer  # noqa: E402  (the tests' coturn, from the shipped configuration)

BARCODE_JS = (HERE / "barcode.js").read_text()
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required"]

PUBLISH_JS = """async ([key, codec]) => {
  const { negotiate, preferCodec } = await import("/static/js/webrtc.js");
  const track = window.barcode.paint().captureStream(30).getVideoTracks()[0];
  const pc = new RTCPeerConnection();
  const transceiver = pc.addTransceiver(track, { direction: "sendonly" });
  preferCodec(transceiver, codec);
  pc.addTransceiver(window.barcode.tone(), { direction: "sendonly" });
  window.publisher = pc;
  await negotiate(pc, "/whip/bench", key);
}"""

# The baseline: page A offers the canvas, page B answers; SDP passes through this script.
DIRECT_OFFER_JS = """async (codec) => {
  const { preferCodec } = await import("/static/js/webrtc.js");
  const track = window.barcode.paint().captureStream(30).getVideoTracks()[0];
  const pc = new RTCPeerConnection();
  const stream = new MediaStream([track, window.barcode.tone()]);
  preferCodec(pc.addTransceiver(track, { direction: "sendonly", streams: [stream] }), codec);
  pc.addTransceiver(stream.getAudioTracks()[0], { direction: "sendonly", streams: [stream] });
  window.direct = pc;
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((r) => { if (pc.iceGatheringState === "complete") r(); else pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r(); });
  return pc.localDescription.sdp;
}"""
DIRECT_ANSWER_JS = """async (offer) => {
  const pc = new RTCPeerConnection();
  const video = document.createElement("video");
  video.autoplay = true; video.muted = true; video.playsInline = true;
  document.body.append(video);
  pc.ontrack = (e) => { video.srcObject = e.streams[0]; };  // audio and video together, synchronised
  window.direct = pc; window.directVideo = video;
  await pc.setRemoteDescription({ type: "offer", sdp: offer });
  await pc.setLocalDescription(await pc.createAnswer());
  await new Promise((r) => { if (pc.iceGatheringState === "complete") r(); else pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r(); });
  return pc.localDescription.sdp;
}"""
MEASURE_JS = """async ([selector, seconds]) => {
  const video = selector === "direct" ? window.directVideo : document.querySelector(selector);
  for (let i = 0; i < 100 && !(video && video.videoWidth); i += 1) await new Promise((r) => setTimeout(r, 100));
  // The HTTP players pick a rendition by bandwidth: ask for the top one (the barcode needs the pixels).
  const playback = selector !== "direct" && window.tallyPlayer.hls;
  for (let i = 0; playback && i < 100; i += 1) {
    const levels = playback.hls ? playback.hls.levels : playback.player ? playback.player.getRepresentationsByType("video") : [];
    if (levels.length) {
      const heights = levels.map((level) => level.height || 0);
      playback.setLevel(heights.indexOf(Math.max(...heights)));
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  // Chromium starts at a low bitrate and a small picture and ramps up: measure once it is at full size.
  const settle = performance.now() + 20000;
  while (video.videoWidth < 1280 && performance.now() < settle) await new Promise((r) => setTimeout(r, 250));
  await new Promise((r) => setTimeout(r, 1000));
  const result = await window.barcode.measure(video, seconds);
  const pc = selector === "direct" ? window.direct : window.tallyPlayer.pc;
  if (!pc) {  // HLS or DASH: what the player itself thinks its latency is, and the picture size
    const playback = window.tallyPlayer.hls;
    result.playerLatencyMs = playback && playback.latency ? Math.round(1000 * playback.latency) : null;
    const hls = playback && playback.hls;
    if (hls) {
      const d = hls.levels[hls.currentLevel]?.details;
      result.hlsJs = { level: hls.currentLevel, live: d?.live, partTarget: d?.partTarget, edge: d?.edge,
        currentTime: video.currentTime, fragments: d?.fragments?.length, lowLatency: hls.lowLatencyMode,
        targetLatency: hls.targetLatency, playingDate: hls.playingDate?.getTime(), now: Date.now() };
    }
    result.size = `${video.videoWidth}x${video.videoHeight}`;
    return result;
  }
  const stats = await pc.getStats();
  stats.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") {
    result.codec = stats.get(s.codecId)?.mimeType;
    result.jitterBufferMs = 1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount;
    result.size = `${s.frameWidth}x${s.frameHeight}`;
    result.fps = s.framesPerSecond;
  } });
  return result;
}"""


# A strict network: relay candidates only in every peer connection the page makes, through the TURN
# server's UDP or (a network that lets no UDP out) TCP transport.
ONLY_RELAYS = """(() => {
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = function (configuration = {}) {
    const iceServers = (configuration.iceServers || [])
      .map((s) => ({ ...s, urls: [].concat(s.urls).filter((u) => u.endsWith("transport=%s")) }))
      .filter((s) => s.urls.length);
    return new Native({ ...configuration, iceServers, iceTransportPolicy: "relay" });
  };
  window.RTCPeerConnection.prototype = Native.prototype;
})();"""
SELECTED_CANDIDATE_JS = """async () => {
  const stats = await window.tallyPlayer.pc.getStats();
  let out = null;
  stats.forEach((r) => { if (r.type === "transport" && r.selectedCandidatePairId) {
    const local = stats.get(stats.get(r.selectedCandidatePairId).localCandidateId);
    out = `${local.candidateType}/${local.relayProtocol || local.protocol}`;
  } });
  return out;
}"""


def launch(playwright: Any, url: str) -> Any:
    profile = tempfile.mkdtemp(prefix="tally-g2g-")
    context = playwright.chromium.launch_persistent_context(
        profile, executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS, base_url=url,
        env={"HOME": profile, "XDG_RUNTIME_DIR": profile})
    context.set_default_timeout(30_000)
    return context


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    latencies = result.pop("latencies")
    return {**result, "samples": len(latencies), "p50_ms": percentile(latencies, 0.5), "p95_ms": percentile(latencies, 0.95)}


def through_sfu(playwright: Any, url: str, key: str, codec: str, seconds: float, load: Callable[[], None],
                over: str = "", publisher: str = "chromium", turn: TurnServer | None = None,
                turn_transport: str = "udp") -> dict[str, Any]:
    """Through the server: the watch page on WebRTC (WHEP), or `over` ("hls", "dash") on its LL-HLS
    (hls.js) or LL-DASH (dash.js) player; with `turn`, the WHEP viewer through that TURN relay only."""
    sender, viewer = launch(playwright, url), launch(playwright, url)
    if turn is not None:
        viewer.add_init_script(ONLY_RELAYS % turn_transport)
    child = None
    try:
        if publisher == "aiortc":
            child = subprocess.Popen([sys.executable, __file__, "aiortc-publish", url, key, codec, str(seconds + 60)])
        else:
            page = sender.new_page()
            page.goto("/")
            page.evaluate(BARCODE_JS)
            page.evaluate(PUBLISH_JS, [key, codec])
        load()  # other viewers join once the stream is live
        watch = viewer.new_page()
        watch.goto(f"/watch/bench?playback={over}" if over else "/watch/bench")
        watch.evaluate(BARCODE_JS)
        watch.wait_for_selector('#player[data-state="playing"]', timeout=20_000)
        selector = '#player video[aria-label="Live video (HLS)"]' if over else "#player video"
        cpu_before, started = (turn.cpu_seconds(), time.monotonic()) if turn else (0.0, 0.0)
        result = summarise(watch.evaluate(MEASURE_JS, [selector, seconds]))
        if turn is not None:  # coturn's CPU while it relayed this one viewer (a share of one core)
            result["turnCpuPercent"] = round(100 * (turn.cpu_seconds() - cpu_before) / (time.monotonic() - started), 2)
        if not over:
            result["candidate"] = watch.evaluate(SELECTED_CANDIDATE_JS)
        _, channel, _ = http("GET", url + "/api/channels/bench")
        result["viewers"] = json.loads(channel)["viewer_count"]  # the load's viewers and this one
        return result
    finally:
        if child is not None:
            child.kill()
            child.wait(timeout=30)
        sender.close()
        viewer.close()
        time.sleep(4)  # the publisher went without DELETE: let the stream end before the next round


def aiortc_publish(url: str, key: str, codec: str, seconds: float) -> None:
    """A third-party WHIP client (a child process): aiortc sending the barcode and a tone until killed."""
    import asyncio
    import math

    import av
    import numpy as np
    from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
    from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
    from rtmp_glass_to_glass import H, W, barcode_rows, picture  # its painter (it imports this module)

    chroma = b"\x80" * (W // 2 * H // 2)

    class Barcode(VideoStreamTrack):
        frame = 0

        async def recv(self) -> Any:
            pts, time_base = await self.next_timestamp()
            image = av.VideoFrame(W, H, "yuv420p")
            image.planes[0].update(barcode_rows(round(time.time() * 1000)) + picture(self.frame))
            image.planes[1].update(chroma)
            image.planes[2].update(chroma)
            image.pts, image.time_base = pts, time_base
            self.frame += 1
            return image

    class Tone(AudioStreamTrack):
        samples = 0

        async def recv(self) -> Any:
            frame = await super().recv()  # silence, paced in real time
            t = (np.arange(frame.samples) + self.samples) / frame.sample_rate
            self.samples += frame.samples
            wave = (0.1 * 32767 * np.sin(2 * math.pi * 440 * t)).astype(np.int16)
            frame.planes[0].update(np.repeat(wave, len(frame.layout.channels)).tobytes())
            return frame

    async def run() -> None:
        pc = RTCPeerConnection()
        video = pc.addTransceiver(Barcode(), direction="sendonly")
        mime = codec.lower()
        video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() == mime])
        pc.addTransceiver(Tone(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        status, answer, _ = await asyncio.to_thread(http, "POST", url + "/whip/bench", None, key,
                                                    pc.localDescription.sdp.encode(), "application/sdp")
        assert status == 201, answer
        await pc.setRemoteDescription(RTCSessionDescription(answer.decode(), "answer"))
        await asyncio.sleep(seconds)
        await pc.close()

    asyncio.run(run())


def direct(playwright: Any, url: str, codec: str, seconds: float) -> dict[str, Any]:
    sender, viewer = launch(playwright, url), launch(playwright, url)
    try:
        a, b = sender.new_page(), viewer.new_page()
        for page in (a, b):
            page.goto("/")
            page.evaluate(BARCODE_JS)
        offer = a.evaluate(DIRECT_OFFER_JS, codec)
        answer = b.evaluate(DIRECT_ANSWER_JS, offer)
        a.evaluate("async (sdp) => window.direct.setRemoteDescription({ type: 'answer', sdp })", answer)
        return summarise(b.evaluate(MEASURE_JS, ["direct", seconds]))
    finally:
        sender.close()
        viewer.close()


def main() -> None:
    if sys.argv[1:2] == ["aiortc-publish"]:
        url, key, codec, seconds = sys.argv[2:6]
        aiortc_publish(url, key, codec, float(seconds))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--codecs", default="video/H264,video/VP8")
    parser.add_argument("--publisher", default="chromium", choices=("chromium", "aiortc"),
                        help="who publishes over WHIP: Chromium's canvas, or aiortc (a third-party client)")
    parser.add_argument("--load", type=int, default=0, help="lean subscribers watching at the same time")
    parser.add_argument("--paths", default="direct,sfu,hls,dash",
                        help="direct (browser to browser), sfu (WHEP), turn / turn-tcp (WHEP through a TURN relay "
                             "only, over UDP / TCP), "
                             "hls (hls.js LL-HLS), dash (dash.js LL-DASH)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    turn = None
    settings = {}
    if {"turn", "turn-tcp"} & set(args.paths.split(",")):
        turn = TurnServer(Path(tempfile.mkdtemp(prefix="tally-g2g-turn-")))
        turn.start()
        settings = {"TURN_URLS": ",".join(turn.urls("udp", "tcp")), "TURN_SECRET": turn.secret}
    try:
        with server(PUBLISHER_TIMEOUT="2", MAX_VIEWERS_PER_NODE="1000", RATE_WHEP_PER_MINUTE="100000",
                    RATE_WHIP_PER_MINUTE="1000", **settings) as running, sync_playwright() as playwright:
            key = running.stream_key()
            for round_ in range(args.rounds):
                for codec in args.codecs.split(","):
                    loaders: list[subprocess.Popen[bytes]] = []

                    def start_load() -> None:
                        if args.load:
                            loaders.append(subprocess.Popen(
                                [sys.executable, str(HERE / "sfu_forwarding.py"), "watch", running.url, "bench", str(args.load),
                                 str(args.seconds + 40), str(running.pid)], stdout=subprocess.DEVNULL,
                                stderr=open(running.data / "load.log", "ab")))
                            time.sleep(3)  # let them join

                    for path in args.paths.split(","):
                        try:
                            result = (direct(playwright, running.url, codec, args.seconds) if path == "direct"
                                      else through_sfu(playwright, running.url, key, codec, args.seconds, start_load,
                                                       over=path if path in ("hls", "dash") else "",
                                                       publisher=args.publisher,
                                                       turn=turn if path.startswith("turn") else None,
                                                       turn_transport="tcp" if path == "turn-tcp" else "udp"))
                        finally:
                            for loader in loaders:
                                loader.kill()
                                loader.wait(timeout=30)
                            loaders.clear()
                        print(json.dumps({"round": round_ + 1, "path": path, **result}), flush=True)
                        rows.setdefault((codec, path), []).append(result)
        print()
        print(f"glass-to-glass, {args.rounds} rounds of {args.seconds:.0f} s, load {args.load} lean subscribers, "
              f"published by {args.publisher}")
        print("| codec | path | p50 ms (median of rounds) | p95 ms (median) | frames read / invalid | jitter buffer ms "
              "| player's own latency ms | size |")
        print("|---|---|---|---|---|---|---|---|")
        for (codec, path), results in rows.items():
            p50 = statistics.median(r["p50_ms"] for r in results)
            p95 = statistics.median(r["p95_ms"] for r in results)
            jitter = statistics.median(r.get("jitterBufferMs") or 0 for r in results)
            own = [r["playerLatencyMs"] for r in results if r.get("playerLatencyMs")]
            label = {"sfu": "SFU (WHIP → WHEP)", "turn": "SFU, viewer through TURN (UDP)",
                     "turn-tcp": "SFU, viewer through TURN (TCP)",
                     "hls": "LL-HLS (hls.js)", "dash": "LL-DASH (dash.js)", "direct": "browser to browser"}[path]
            print(f"| {codec} | {label} | {p50:.0f} | {p95:.0f} | "
                  f"{sum(r['samples'] for r in results)} / {sum(r['invalid'] for r in results)} | {jitter:.0f} | "
                  f"{statistics.median(own) if own else '—'} | {results[-1].get('size')} |")
        for kind in ("turn", "turn-tcp"):
            turned = [r for (_, path), results in rows.items() if path == kind for r in results]
            if turned:
                print(f"coturn CPU per relayed viewer ({kind}): median "
                      f"{statistics.median(r['turnCpuPercent'] for r in turned):.2f} % of a core; "
                      f"selected candidates {sorted({r.get('candidate') for r in turned})}")
    finally:
        if turn is not None:
            turn.stop()


if __name__ == "__main__":
    main()
