"""Benchmark: LL-HLS (or LL-DASH) viewers one origin core serves, directly and through the nginx edge of
infra/cdn.

    .venv/bin/python loadtest/hls_viewers.py --viewers 200 --seconds 20 --rounds 3 [--protocol dash]

The real server runs as a subprocess with one stream published into it (an aiortc publisher sending
pre-encoded 720p H.264 + Opus, so the transcoder runs as it does live). N viewers, lean asyncio HTTP
clients in this process, follow the top rendition as an LL-HLS player does: a blocking playlist reload
for the next part, then each new part. The origin's CPU is read from /proc for the server process,
minus what it spends with no viewers at all (the transcoder, the SFU), measured in the same round; the
edge's from its nginx processes. Viewers per origin core = N / (extra origin CPU share). The client's
own CPU is printed beside it: on two cores it limits N.

With `--protocol dash` the viewers are LL-DASH players instead: each reloads the MPD every
`minimumUpdatePeriod` and fetches, on the MPD's clock, each new segment of the top video
representation and of the audio the moment it becomes available (a part after it starts), reading
it chunk by chunk as the origin sends it while it is being made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests"), str(HERE), str(HERE.parent / "infra" / "cdn")]

from harness import cpu_seconds, http, server  # noqa: E402
from render import render  # noqa: E402
from webrtc_peer import Peer  # noqa: E402


def parse_playlist(text: str) -> tuple[list[str], int, int]:
    """(part URIs, msn of the segment being made, parts of it listed)."""
    parts: list[str] = []
    msn = 0
    pending = 0
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            msn = int(line.split(":")[1])
        elif line.startswith("#EXT-X-PART:"):
            parts.append(line.split('URI="')[1].split('"')[0])
            pending += 1
        elif line and not line.startswith("#"):
            msn += 1
            pending = 0
    return parts, msn, pending


async def viewer(session: aiohttp.ClientSession, media: str, until: float, counts: dict[str, int]) -> None:
    folder = media.rsplit("/", 1)[0] + "/"
    fetched: set[str] = set()
    async with session.get(media) as response:
        text = await response.text()
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        parts, msn, pending = parse_playlist(text)
        for uri in parts[-2:]:
            if uri not in fetched:
                async with session.get(folder + uri) as response:
                    counts["bytes"] += len(await response.read())
                fetched.add(uri)
                counts["parts"] += 1
        try:
            async with session.get(f"{media}?_HLS_msn={msn}&_HLS_part={pending}") as response:
                text = await response.text()
                counts["playlists"] += 1
                if response.status != 200:
                    counts["errors"] += 1
                    await asyncio.sleep(0.2)
        except aiohttp.ClientError:
            counts["errors"] += 1
            await asyncio.sleep(0.2)


async def dash_viewer(session: aiohttp.ClientSession, mpd_url: str, until: float, counts: dict[str, int]) -> None:
    from dash_checker import LiveMpdChecker

    folder = mpd_url.rsplit("/", 1)[0] + "/"
    loop = asyncio.get_running_loop()
    fetched: dict[str, int] = {}
    reload_at = 0.0
    mpd = None
    while loop.time() < until:
        if loop.time() >= reload_at:
            async with session.get(mpd_url) as response:
                text = await response.text()
            counts["playlists"] += 1
            mpd = LiveMpdChecker().check(text)
            reload_at = loop.time() + 2.0
        assert mpd is not None
        tracks = [mpd.tracks[0]] + [t for t in mpd.tracks if t.kind == "audio"]  # the top video and the audio
        wake = reload_at
        for track in tracks:
            newest = mpd.available(time.time(), track)[-1]
            if fetched.get(track.id, -1) < newest:
                fetched[track.id] = newest
                try:
                    async with session.get(folder + track.url(newest)) as response:
                        async for chunk in response.content.iter_any():
                            counts["bytes"] += len(chunk)
                        counts["parts"] += 1
                        if response.status != 200:
                            counts["errors"] += 1
                except aiohttp.ClientError:
                    counts["errors"] += 1
            due = mpd.start + (fetched[track.id] + 2) * track.seconds - track.offset  # when the next one is
            wake = min(wake, loop.time() + max(0.0, due - time.time()))
        await asyncio.sleep(max(0.01, wake - loop.time()))


async def watch(base: str, channel: str, viewers: int, seconds: float, protocol: str = "hls") -> dict[str, int]:
    counts = {"parts": 0, "playlists": 0, "bytes": 0, "errors": 0}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        if protocol == "dash":
            until = asyncio.get_running_loop().time() + seconds
            mpd_url = f"{base}/dash/{channel}/manifest.mpd"
            await asyncio.gather(*(dash_viewer(session, mpd_url, until, counts) for _ in range(viewers)))
            return counts
        async with session.get(f"{base}/hls/{channel}/index.m3u8") as response:
            master = await response.text()
        uri = next(line for line in master.splitlines() if line and not line.startswith("#"))
        media = f"{base}/hls/{channel}/{uri}"
        until = asyncio.get_running_loop().time() + seconds
        await asyncio.gather(*(viewer(session, media, until, counts) for _ in range(viewers)))
    return counts


def nginx_cpu(prefix: Path) -> float:
    pid = int((prefix / "nginx.pid").read_text())
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return sum(cpu_seconds(int(p)) for p in [pid, *children])


async def publish(url: str, key: str) -> Peer:
    peer = Peer.publisher("h264", audio=True)
    offer = await peer.offer()
    status, answer, _ = await asyncio.to_thread(http, "POST", url + "/whip/bench", None, key, offer.encode(),
                                                "application/sdp")
    assert status == 201, answer
    await peer.answer(answer.decode())
    return peer


async def run(viewers: int, seconds: float, rounds: int, protocol: str) -> None:
    rows: dict[str, list[dict[str, float]]] = {"origin": [], "edge": []}
    with server(PUBLISHER_TIMEOUT="5", RATE_WHIP_PER_MINUTE="1000") as running:
        key = running.stream_key()
        peer = await publish(running.url, key)
        prefix = Path(tempfile.mkdtemp(prefix="tally-edge-"))
        with socket.socket() as s:  # a free port for the edge
            s.bind(("127.0.0.1", 0))
            edge_port = s.getsockname()[1]
        conf = render(running.url.removeprefix("http://"), f"127.0.0.1:{edge_port}", prefix, workers="1", user="root")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        edge = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"])
        try:
            await asyncio.sleep(6)  # the first segments
            for _ in range(rounds):
                # The ladder runs on demand: one request starts it (it runs 60 s past the last one), so the
                # no-viewer share below includes the transcoder.
                manifest = "/dash/bench/manifest.mpd" if protocol == "dash" else "/hls/bench/index.m3u8"
                assert (await asyncio.to_thread(http, "GET", running.url + manifest))[0] == 200
                idle0 = cpu_seconds(running.pid)
                await asyncio.sleep(seconds / 2)
                idle = (cpu_seconds(running.pid) - idle0) / (seconds / 2)  # transcoder + SFU, no viewers
                for path, base in (("origin", running.url), ("edge", f"http://127.0.0.1:{edge_port}")):
                    origin0, client0 = cpu_seconds(running.pid), time.process_time()
                    edge0 = nginx_cpu(prefix)
                    started = time.monotonic()
                    counts = await watch(base, "bench", viewers, seconds, protocol)
                    wall = time.monotonic() - started
                    origin_share = (cpu_seconds(running.pid) - origin0) / wall
                    extra = origin_share - idle
                    row = {
                        "viewers": viewers,
                        "parts_per_s": round(counts["parts"] / wall),
                        "playlists_per_s": round(counts["playlists"] / wall),
                        "mbit_per_s": round(counts["bytes"] * 8 / wall / 1e6, 1),
                        "errors": counts["errors"],
                        "origin_core_share": round(origin_share, 3),
                        "origin_idle_share": round(idle, 3),
                        # None: the origin did not measurably work harder than with no viewers
                        "viewers_per_origin_core": round(viewers / extra) if extra > 0.02 else None,
                        "edge_core_share": round((nginx_cpu(prefix) - edge0) / wall, 3),
                        "client_core_share": round((time.process_time() - client0) / wall, 3),
                    }
                    rows[path].append(row)
                    print(json.dumps({"path": path, **row}), flush=True)
        finally:
            edge.terminate()
            edge.wait(10)
            await peer.close()
    print()
    print(f"{protocol}: parts are LL-HLS parts (video), or DASH segments (video and audio)")
    print(f"| path | viewers | parts/s served | origin core share (idle) | viewers per origin core | edge core share | client core share |")
    print("|---|---|---|---|---|---|---|")
    for path, results in rows.items():
        med = {k: statistics.median(r[k] or 0 for r in results) for k in results[0]}
        per_core = f"{med['viewers_per_origin_core']:.0f}" if med["viewers_per_origin_core"] else "no measurable rise"
        print(f"| {path} | {viewers} | {med['parts_per_s']:.0f} | {med['origin_core_share']:.3f} ({med['origin_idle_share']:.3f}) | "
              f"{per_core} | {med['edge_core_share']:.3f} | {med['client_core_share']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--protocol", choices=("hls", "dash"), default="hls")
    args = parser.parse_args()
    asyncio.run(run(args.viewers, args.seconds, args.rounds, args.protocol))


if __name__ == "__main__":
    main()
