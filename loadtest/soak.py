"""Soak: a live stream whose viewers come and go all the time, for half an hour; the server's memory,
open files and asyncio tasks must stay flat after warm-up.

    .venv/bin/python loadtest/soak.py --minutes 30 --viewers 40

One publisher (loadtest/sfu_forwarding.py's, H.264 720p + Opus) and a churning audience in another
process: about `--viewers` lean viewers at any time; every second a few leave (half with DELETE, half
by vanishing, so the server notices by itself), a few join, and one offer in ten never connects (it
is given up after SESSION_CONNECT_TIMEOUT). Every 30 s the server's resident memory, open files,
asyncio tasks and sessions are sampled; the figures after `--warmup` minutes are what must not grow.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(Path(__file__).resolve().parent)]

from harness import http, metric, server  # noqa: E402

SDP = "application/sdp"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_files(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


async def churn(url: str, channel: str, viewers: int, seconds: float, seed: int) -> None:
    """The audience: joins, leaves, vanishes and never-connecting offers, until `seconds` are over."""
    from sfu import aiortc_internals as internals
    from sfu_forwarding import LeanViewer
    from sfu_forwarding import join as join_viewer
    from webrtc_peer import LOOPBACK

    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    watching: list[LeanViewer] = []
    counts = {"joined": 0, "left": 0, "vanished": 0, "ghosts": 0, "refused": 0}

    async def post(sdp: str) -> tuple[int, bytes, Any]:
        return await loop.run_in_executor(None, lambda: http("POST", f"{url}/whep/{channel}", raw=sdp.encode(),
                                                             content_type=SDP))

    async def join() -> None:
        viewer = await join_viewer(url, channel)
        if viewer is None:
            counts["refused"] += 1
            return
        watching.append(viewer)
        counts["joined"] += 1

    async def ghost() -> None:
        viewer = LeanViewer()
        internals.plan_gathering(viewer.pc, LOOPBACK)
        await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
        sdp = "".join(line + "\r\n" for line in viewer.pc.localDescription.sdp.splitlines()
                      if not line.startswith(("a=candidate", "a=end-of-candidates")))
        await viewer.pc.close()
        status, _, _ = await post(sdp)
        counts["ghosts" if status == 201 else "refused"] += 1

    async def leave(viewer: LeanViewer, politely: bool) -> None:
        if politely:
            await loop.run_in_executor(None, lambda: http("DELETE", url + viewer.location))
        await viewer.pc.close()
        counts["left" if politely else "vanished"] += 1

    deadline = loop.time() + seconds
    next_report = loop.time() + 30
    while loop.time() < deadline:
        for _ in range(max(0, viewers - len(watching)) // 4 + rng.randrange(3)):
            await join()
        if rng.random() < 0.3:
            await ghost()
        for _ in range(rng.randrange(3)):
            if watching:
                await leave(watching.pop(rng.randrange(len(watching))), politely=rng.random() < 0.5)
        await asyncio.sleep(1.0)
        if loop.time() >= next_report:
            next_report += 30
            print("CHURN " + json.dumps({**counts, "watching": len(watching)}), flush=True)
    for viewer in watching:
        await leave(viewer, politely=True)
    print("CHURN " + json.dumps({**counts, "watching": 0}), flush=True)


def run(minutes: float, viewers: int, warmup: float, seed: int) -> None:
    settings = {"MAX_VIEWERS_PER_NODE": "1000", "RATE_WHEP_PER_MINUTE": "100000", "MAX_PENDING_PER_CLIENT": "100"}
    with server(**settings) as running:
        url = running.url
        forwarding = str(Path(__file__).with_name("sfu_forwarding.py"))
        publisher = subprocess.Popen([sys.executable, forwarding, "publish", url, "bench", running.stream_key()],
                                     stdout=subprocess.PIPE, text=True)
        audience = None
        samples: list[dict[str, Any]] = []
        idle: dict[str, Any] = {}
        after: dict[str, Any] = {}
        try:
            assert publisher.stdout is not None and publisher.stdout.readline().strip() == "PUBLISHING"
            audience = subprocess.Popen([sys.executable, __file__, "churn", url, "bench", str(viewers),
                                         str(minutes * 60), str(seed)])
            started = time.monotonic()

            def sample() -> dict[str, Any]:
                taken = {
                    "minute": round((time.monotonic() - started) / 60, 1),
                    "rss_mib": round(rss_kib(running.pid) / 1024, 1),
                    "open_files": open_files(running.pid),
                    "tasks": metric(url, "tally_process_asyncio_tasks"),
                    "viewers": metric(url, "tally_sfu_viewers"),
                    "pending": metric(url, "tally_sfu_pending"),
                    "forwarded": metric(url, "tally_sfu_packets_out"),
                }
                print(json.dumps(taken), flush=True)
                return taken

            idle = sample()
            while True:
                time.sleep(30)
                if audience.poll() is not None:
                    break
                samples.append(sample())
            time.sleep(20)  # viewers that vanished are given up after SUBSCRIBER_TIMEOUT (15 s)
            after = sample()
        finally:
            if audience is not None and audience.poll() is None:
                audience.terminate()
            publisher.send_signal(signal.SIGTERM)
            publisher.wait(timeout=10)
    steady = [s for s in samples if s["minute"] >= warmup]
    if len(steady) < 2:
        raise SystemExit("too short to say: run longer than the warm-up")
    first, last = steady[0], steady[-1]
    hours = (last["minute"] - first["minute"]) / 60
    print()
    print(f"soak: {minutes:g} min, ~{viewers} viewers churning; after {warmup:g} min of warm-up:")
    print("| | after warm-up | at the end | max | change |")
    print("|---|---|---|---|---|")
    for key, unit in (("rss_mib", " MiB"), ("open_files", ""), ("tasks", "")):
        top = max(s[key] for s in steady)
        print(f"| {key} | {first[key]:g}{unit} | {last[key]:g}{unit} | {top:g}{unit} | {last[key] - first[key]:+g}{unit} |")
    print(f"memory slope {(last['rss_mib'] - first['rss_mib']) / hours if hours else 0:+.1f} MiB/hour")
    print(f"with the publisher alone, before: {idle['open_files']:g} open files, {idle['tasks']:g} tasks; after the "
          f"audience left: {after['open_files']:g} open files, {after['tasks']:g} tasks, {after['viewers']:g} viewers, "
          f"{after['pending']:g} pending, {after['rss_mib']:g} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--viewers", type=int, default=40)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--seed", type=int, default=7)
    c = sub.add_parser("churn")
    c.add_argument("url")
    c.add_argument("channel")
    c.add_argument("viewers", type=int)
    c.add_argument("seconds", type=float)
    c.add_argument("seed", type=int)
    args = parser.parse_args()
    if args.command == "churn":
        asyncio.run(churn(args.url, args.channel, args.viewers, args.seconds, args.seed))
    else:
        run(args.minutes, args.viewers, args.warmup, args.seed)


if __name__ == "__main__":
    main()
