"""Benchmark: glass-to-glass from an RTMP encoder to a WebRTC viewer in Chromium, and the server's CPU
for the stream, with the encoder's video passed through (no B-frames) and re-encoded (B-frames).

    .venv/bin/python loadtest/rtmp_glass_to_glass.py --rounds 3 --seconds 10 [--bframes 0,2]

The encoder is this script in a child process (`encode`): it paints the wall clock as the barcode of
`barcode.js` into 1280x720 frames at 30 fps (with moving squares to keep x264 busy), encodes them with
libx264 (ultrafast, zerolatency: the "zero-latency encoder setting"; `--bframes 2` adds two B-frames,
as OBS's x264 default does) and a 48 kHz stereo AAC tone, and publishes FLV over RTMP with PyAV. A
Chromium plays the channel in the real `/watch/{channel}` player and reads the barcode from every
shown frame, as `glass_to_glass.py` does. Latency = viewer clock at display minus the time painted:
encode, RTMP, the server (the AAC-to-Opus transcode, the re-encode when there are B-frames), WebRTC,
the jitter buffer, decode, render. The server's CPU is read from /proc over each round.
"""

from __future__ import annotations

import argparse
import fractions
import json
import math
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from glass_to_glass import BARCODE_JS, MEASURE_JS, launch, summarise  # noqa: E402
from harness import cpu_seconds, http, server  # noqa: E402

W, H, CELL, COLS, FPS = 1280, 720, 80, 16, 30
RATE = 48_000


def barcode_rows(ms: int) -> bytes:
    """The top 240 lines of the luma plane: the time's 32 low bits and the check, as barcode.js paints."""
    value = ms & 0xFFFFFFFF
    bits = [(value >> i) & 1 for i in range(32)] + [((~value & 0xFFFF) >> i) & 1 for i in range(16)]
    out = bytearray()
    for row in range(3):
        line = b"".join((b"\xeb" if bits[row * COLS + col] else b"\x10") * CELL for col in range(COLS))
        out += line * CELL
    return bytes(out)


def picture(frame: int) -> bytes:
    """The luma below the barcode: gray, with squares that move every frame."""
    lines = [bytearray(b"\x50" * W) for _ in range(H - 3 * CELL)]
    for i in range(12):
        x = (frame * 7 + i * 97) % (W - 40)
        y = (i * 53 + frame * 3) % (H - 3 * CELL - 40)
        for line in lines[y:y + 40]:
            line[x:x + 40] = b"\xc8" * 40
    return b"".join(lines)


def encode(url: str, seconds: float, bframes: int) -> None:
    """The RTMP encoder (a child process): paint, encode and publish in real time."""
    import av

    container: Any = av.open(url, "w", format="flv")
    video: Any = container.add_stream("libx264", rate=FPS)
    video.width, video.height, video.pix_fmt = W, H, "yuv420p"
    video.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency", "bf": str(bframes),
                                   "g": str(2 * FPS), "x264-params": f"bframes={bframes}:keyint={2 * FPS}"}
    video.codec_context.time_base = fractions.Fraction(1, 1000)
    audio: Any = container.add_stream("aac", rate=RATE, layout="stereo")
    audio.codec_context.time_base = fractions.Fraction(1, RATE)
    chroma = b"\x80" * (W // 2 * H // 2)
    start = time.time()
    samples = 0
    frame_number = 0
    while time.time() - start < seconds:
        due = start + frame_number / FPS
        if due > time.time():
            time.sleep(due - time.time())
        now_ms = round(time.time() * 1000)
        image = av.VideoFrame(W, H, "yuv420p")
        image.planes[0].update(barcode_rows(now_ms) + picture(frame_number))
        image.planes[1].update(chroma)
        image.planes[2].update(chroma)
        image.pts = now_ms - round(start * 1000)
        image.time_base = fractions.Fraction(1, 1000)
        for packet in video.encode(image):
            container.mux(packet)
        while samples < (frame_number + 1) * RATE // FPS:  # the tone, up to this frame's time
            tone = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
            wave = struct.pack("<1024f", *(0.1 * math.sin(2 * math.pi * 440 * (samples + n) / RATE) for n in range(1024)))
            tone.planes[0].update(wave)
            tone.planes[1].update(wave)
            tone.sample_rate, tone.pts, tone.time_base = RATE, samples, fractions.Fraction(1, RATE)
            samples += 1024
            for packet in audio.encode(tone):
                container.mux(packet)
        frame_number += 1
    container.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_round(playwright: Any, url: str, rtmp: str, pid: int, bframes: int, seconds: float) -> dict[str, Any]:
    encoder = subprocess.Popen([sys.executable, __file__, "encode", rtmp, str(seconds + 30), str(bframes)])
    viewer = launch(playwright, url)
    try:
        deadline = time.monotonic() + 20
        while not json.loads(http("GET", url + "/api/channels/bench")[1])["is_live"]:
            assert time.monotonic() < deadline and encoder.poll() is None, "the RTMP stream did not go live"
            time.sleep(0.2)
        watch = viewer.new_page()
        watch.goto("/watch/bench")
        watch.evaluate(BARCODE_JS)
        watch.wait_for_selector('#player[data-state="playing"]', timeout=20_000)
        cpu, wall = cpu_seconds(pid), time.monotonic()
        result = summarise(watch.evaluate(MEASURE_JS, ["#player video", seconds]))
        result["server_cpu_percent"] = round(100 * (cpu_seconds(pid) - cpu) / (time.monotonic() - wall), 1)
        return result
    finally:
        viewer.close()
        encoder.kill()
        encoder.wait()
        time.sleep(3)  # the stream ends before the next round


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "encode":
        encode(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--bframes", default="0,2", help="B-frames of the encoder, one row each (0: passed through)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    rows: dict[int, list[dict[str, Any]]] = {}
    with server(RTMP_PORT=str(port), PUBLISHER_TIMEOUT="2") as running, sync_playwright() as playwright:
        key = running.stream_key()
        rtmp = f"rtmp://127.0.0.1:{port}/live/{key}"
        for round_ in range(args.rounds):
            for bframes in (int(b) for b in args.bframes.split(",")):
                result = one_round(playwright, running.url, rtmp, running.pid, bframes, args.seconds)
                print(json.dumps({"round": round_ + 1, "bframes": bframes, **result}), flush=True)
                rows.setdefault(bframes, []).append(result)
    print()
    print(f"RTMP glass-to-glass, {args.rounds} rounds of {args.seconds:.0f} s, 1280x720 30 fps x264 ultrafast zerolatency")
    print("| encoder | video on the server | p50 ms (median of rounds) | p95 ms (median) | frames read / invalid "
          "| jitter buffer ms | server CPU % (median) |")
    print("|---|---|---|---|---|---|---|")
    for bframes, results in rows.items():
        label = "passed through" if bframes == 0 else "re-encoded once (libx264 veryfast, zerolatency)"
        print(f"| x264, {bframes} B-frames | {label} | {statistics.median(r['p50_ms'] for r in results):.0f} | "
              f"{statistics.median(r['p95_ms'] for r in results):.0f} | {sum(r['samples'] for r in results)} / "
              f"{sum(r['invalid'] for r in results)} | {statistics.median(r.get('jitterBufferMs') or 0 for r in results):.0f} | "
              f"{statistics.median(r['server_cpu_percent'] for r in results):.1f} |")


if __name__ == "__main__":
    main()
