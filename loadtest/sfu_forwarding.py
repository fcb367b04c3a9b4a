"""Benchmark: one publisher, N lean subscribers, the real server's SFU in between, three processes.

    .venv/bin/python loadtest/sfu_forwarding.py run --steps 10,50,100 --seconds 10
    .venv/bin/python loadtest/sfu_forwarding.py run --steps 50 --seconds 15 --ladder --repeat 3

With `--ladder`, each step is measured alternately without and with the channel's HLS ladder running
(an HLS client keeps asking for it; decoding the 720p source and encoding 360p and 180p in the same
process), `--repeat` times each, to show what the encode costs forwarding: delay p99 and loss.

The publisher sends H.264 720p30 at ~1.4 Mbit/s plus Opus, encoded once (it answers PLIs by jumping to
the clip's next keyframe, as an encoder would). Subscribers are aiortc peers that count RTP headers
after SRTP instead of depacketising and decoding (TESTING.md: a full client costs as much as the
server). Figures per step: forwarded packets per SFU CPU-second (from /proc and /metrics), loss seen
by subscribers, forwarding delay (the SFU stamps abs-send-time when a packet arrives; subscribers
subtract it from their arrival time, so this includes the fan-out position and the client's own
queueing), and WHEP time-to-first-frame (POST to the end of the first video frame).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from harness import cpu_seconds, http, metric, percentile, server  # noqa: E402

NTP_OFFSET = 2_208_988_800
AST_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


# --- publisher process --------------------------------------------------------------------------


async def publish(url: str, channel: str, key: str) -> None:
    from aiortc import RTCRtpSender

    from media_clips import EncodedAudioTrack, EncodedVideoTrack, encode_audio, encode_video
    from webrtc_peer import Peer

    gop = 60
    video = EncodedVideoTrack(encode_video("h264", frames=300, width=1280, height=720, bitrate=1_400_000, gop=gop, noise=True), gop=gop)
    peer = Peer()
    transceiver = peer.pc.addTransceiver(video, direction="sendonly")
    transceiver.setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() in ("video/h264", "video/rtx")]
    )
    transceiver.sender._send_keyframe = video.request_keyframe  # answer PLIs like an encoder
    peer.pc.addTransceiver(EncodedAudioTrack(encode_audio(2.0)), direction="sendonly")
    status, answer, _ = http("POST", f"{url}/whip/{channel}", raw=(await peer.offer()).encode(), token=key,
                             content_type="application/sdp")
    assert status == 201, answer
    await peer.answer(answer.decode())
    print("PUBLISHING", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await peer.close()


# --- subscribers process ------------------------------------------------------------------------


class LeanViewer:
    """Counts what arrives instead of decoding it."""

    def __init__(self) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection

        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        self.video_pt = -1
        self.ast_id = 0
        self.packets = 0
        self.highest = -1
        self.received_video = 0
        self.first_seq = -1
        self.delays: list[float] = []
        self.started = 0.0
        self.first_frame = 0.0
        self.location = ""
        self._audio_passed = False

    def on_rtp(self, data: bytes, original: Any, arrival_ms: int) -> Any:
        self.packets += 1
        pt = data[1] & 0x7F
        if pt != self.video_pt:
            if not self._audio_passed:  # one packet gives aiortc a stream to send receiver reports on
                self._audio_passed = True
                return original(data, arrival_time_ms=arrival_ms)
            return None
        seq = (data[2] << 8) | data[3]
        if self.first_seq < 0:
            self.first_seq = self.highest = seq
        else:
            diff = (seq - (self.highest & 0xFFFF)) & 0xFFFF
            if diff < 0x8000:
                self.highest += diff
        self.received_video += 1
        if not self.first_frame and data[1] & 0x80:
            self.first_frame = time.monotonic()
        if self.ast_id and data[0] & 0x10:
            start = 12 + 4 * (data[0] & 0x0F)
            words = (data[start + 2] << 8) | data[start + 3]
            i, end = start + 4, start + 4 + 4 * words
            while i < end:
                byte = data[i]
                if byte == 0:
                    i += 1
                    continue
                ext, length = byte >> 4, (byte & 0x0F) + 1
                if ext == self.ast_id:
                    sent = int.from_bytes(data[i + 1 : i + 4], "big")
                    now = int((time.time() + NTP_OFFSET) * (1 << 18)) & 0xFFFFFF
                    self.delays.append(((now - sent) & 0xFFFFFF) / (1 << 18))
                    break
                i += 1 + length
        return None


async def join(url: str, channel: str) -> LeanViewer | None:
    """A lean viewer watching `channel` (None when WHEP refuses it); the POST runs in a thread."""
    from aiortc import RTCSessionDescription
    from aiortc.sdp import SessionDescription

    from sfu import aiortc_internals as internals
    from webrtc_peer import LOOPBACK

    viewer = LeanViewer()
    internals.plan_gathering(viewer.pc, LOOPBACK)
    await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
    viewer.started = time.monotonic()
    status, answer, headers = await asyncio.get_running_loop().run_in_executor(
        None, lambda: http("POST", f"{url}/whep/{channel}", raw=viewer.pc.localDescription.sdp.encode(),
                           content_type="application/sdp"))
    if status != 201:
        await viewer.pc.close()
        return None
    viewer.location = headers["Location"]
    for media in SessionDescription.parse(answer.decode()).media:
        if media.kind == "video":
            viewer.video_pt = media.rtp.codecs[0].payloadType
            viewer.ast_id = next((e.id for e in media.rtp.headerExtensions if e.uri == AST_URI), 0)
    await viewer.pc.setRemoteDescription(RTCSessionDescription(answer.decode(), "answer"))
    dtls = viewer.pc.getTransceivers()[0].receiver.transport
    original = dtls._handle_rtp_data

    async def tapped(data: bytes, arrival_time_ms: int) -> None:
        result = viewer.on_rtp(data, original, arrival_time_ms)
        if result is not None:
            await result

    dtls._handle_rtp_data = tapped
    return viewer


async def watch(url: str, channel: str, count: int, seconds: float, server_pid: int) -> None:
    viewers: list[LeanViewer] = []
    loop = asyncio.get_running_loop()

    for _ in range(count):
        viewer = await join(url, channel)
        assert viewer is not None, "WHEP refused a viewer"
        viewers.append(viewer)
    deadline = time.monotonic() + 15
    while any(not v.first_frame for v in viewers) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(2)

    def snapshot() -> dict[str, Any]:
        return {
            "server_cpu": cpu_seconds(server_pid),
            "client_cpu": time.process_time(),
            "forwarded": metric(url, "tally_sfu_packets_out"),
            "wall": time.monotonic(),
            "per_viewer": [(v.highest - v.first_seq + 1, v.received_video, v.packets) for v in viewers],
        }

    for viewer in viewers:
        viewer.delays.clear()
    before = snapshot()
    await asyncio.sleep(seconds)
    after = snapshot()
    expected = sum(a[0] - b[0] for a, b in zip(after["per_viewer"], before["per_viewer"]))
    received = sum(a[1] - b[1] for a, b in zip(after["per_viewer"], before["per_viewer"]))
    packets = sum(a[2] - b[2] for a, b in zip(after["per_viewer"], before["per_viewer"]))
    server_cpu = after["server_cpu"] - before["server_cpu"]
    forwarded = after["forwarded"] - before["forwarded"]
    wall = after["wall"] - before["wall"]
    delays = [d for v in viewers for d in v.delays]
    ttff = [v.first_frame - v.started for v in viewers if v.first_frame]
    result = {
        "viewers": count,
        "forwarded_pps": forwarded / wall,
        "server_cpu_pct": 100 * server_cpu / wall,
        "packets_per_cpu_second": forwarded / server_cpu if server_cpu else float("nan"),
        "client_cpu_pct": 100 * (after["client_cpu"] - before["client_cpu"]) / wall,
        "client_packets": packets,
        "loss_pct": 100 * (1 - received / expected) if expected else float("nan"),
        "delay_p50_ms": 1000 * percentile(delays, 0.5),
        "delay_p99_ms": 1000 * percentile(delays, 0.99),
        "ttff_p50_ms": 1000 * percentile(ttff, 0.5),
        "ttff_p95_ms": 1000 * percentile(ttff, 0.95),
        "no_picture": sum(1 for v in viewers if not v.first_frame),
    }
    print("RESULT " + json.dumps(result), flush=True)
    for viewer in viewers:
        await loop.run_in_executor(None, lambda v=viewer: http("DELETE", url + v.location))
        await viewer.pc.close()


# --- orchestration ------------------------------------------------------------------------------


class HlsClient:
    """Keeps the channel's HLS ladder running by asking for its playlist, as a player would."""

    def __init__(self, url: str, channel: str) -> None:
        self._url = f"{url}/hls/{channel}/index.m3u8"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> HlsClient:
        status, body, _ = http("GET", self._url)
        assert status == 200, body
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            http("GET", self._url)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _watch(url: str, n: int, seconds: float, pid: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "watch", url, "bench", str(n), str(seconds), str(pid)],
                         capture_output=True, text=True, timeout=600)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        print(out.stdout, out.stderr[-3000:])
        raise SystemExit(f"step {n} failed")
    result: dict[str, Any] = json.loads(line[7:])
    return result


def _ladder_stopped(url: str) -> None:
    """Wait until the idle ladder stopped (HLS_IDLE_SECONDS after the last request)."""
    for _ in range(60):
        if metric(url, "tally_hls_ladders") == 0:
            return
        time.sleep(0.5)
    raise SystemExit("the HLS ladder did not stop")


def run(steps: list[int], seconds: float, ladder: bool = False, repeat: int = 1) -> None:
    settings = {"MAX_VIEWERS_PER_NODE": "1000", "RATE_WHEP_PER_MINUTE": "100000", "MAX_PENDING_SESSIONS": "1000",
                "MAX_PENDING_PER_CLIENT": "1000", "HLS_IDLE_SECONDS": "2"}
    with server(**settings) as running:
        url = running.url
        publisher = subprocess.Popen([sys.executable, __file__, "publish", url, "bench", running.stream_key()],
                                     stdout=subprocess.PIPE, text=True)
        try:
            assert publisher.stdout is not None and publisher.stdout.readline().strip() == "PUBLISHING"
            time.sleep(3)
            idle_before, t0 = cpu_seconds(running.pid), time.monotonic()
            time.sleep(5)
            idle_pct = 100 * (cpu_seconds(running.pid) - idle_before) / (time.monotonic() - t0)
            print(f"server CPU with the publisher and no viewers: {idle_pct:.1f} % of a core")
            results = []
            for n in steps:
                for _ in range(repeat):
                    for with_ladder in ((False, True) if ladder else (False,)):
                        if with_ladder:
                            with HlsClient(url, "bench"):
                                time.sleep(3)  # the ladder's first segments: it is encoding steadily
                                result = _watch(url, n, seconds, running.pid)
                            _ladder_stopped(url)
                        else:
                            result = _watch(url, n, seconds, running.pid)
                        result["ladder"] = with_ladder
                        results.append(result)
                        print(json.dumps(result))
                        time.sleep(2)
        finally:
            publisher.send_signal(signal.SIGTERM)
            publisher.wait(timeout=10)
    print()
    print("| viewers | ladder | forwarded pkt/s | SFU CPU % | pkts per SFU CPU-s | client CPU % | loss % | delay p50 / p99 ms | TTFF p50 / p95 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['viewers']} | {'on' if r['ladder'] else 'off'} | {r['forwarded_pps']:.0f} | {r['server_cpu_pct']:.0f} | "
              f"{r['packets_per_cpu_second']:.0f} | {r['client_cpu_pct']:.0f} | {r['loss_pct']:.2f} | "
              f"{r['delay_p50_ms']:.1f} / {r['delay_p99_ms']:.1f} | {r['ttff_p50_ms']:.0f} / {r['ttff_p95_ms']:.0f} |")
    if ladder:
        for n in steps:
            for on in (False, True):
                p99 = sorted(r["delay_p99_ms"] for r in results if r["viewers"] == n and r["ladder"] == on)
                print(f"{n} viewers, ladder {'on' if on else 'off'}: median delay p99 {p99[len(p99) // 2]:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--steps", default="10,50,100")
    r.add_argument("--seconds", type=float, default=10)
    r.add_argument("--ladder", action="store_true", help="measure each step without and with the HLS ladder running")
    r.add_argument("--repeat", type=int, default=1)
    p = sub.add_parser("publish")
    p.add_argument("url")
    p.add_argument("channel")
    p.add_argument("key")
    w = sub.add_parser("watch")
    w.add_argument("url")
    w.add_argument("channel")
    w.add_argument("count", type=int)
    w.add_argument("seconds", type=float)
    w.add_argument("server_pid", type=int)
    args = parser.parse_args()
    if args.command == "run":
        run([int(s) for s in args.steps.split(",")], args.seconds, args.ladder, args.repeat)
    elif args.command == "publish":
        asyncio.run(publish(args.url, args.channel, args.key))
    else:
        asyncio.run(watch(args.url, args.channel, args.count, args.seconds, args.server_pid))


if __name__ == "__main__":
    main()
