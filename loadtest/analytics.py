"""Benchmarks of the analytics: a channel page over a million stored viewing sessions, and what the
players' beacons cost the server.

    .venv/bin/python loadtest/analytics.py report --sessions 1000000 --database postgres
    .venv/bin/python loadtest/analytics.py beacons --viewers 1000 --seconds 60 --database postgres

`report`: a fresh database (PostgreSQL, or `--database sqlite`) with 200 channels, `--sessions` viewing
sessions over the last 90 days (a quarter of them the measured channel's, the rest spread over the
others; half with a player's figures), the measured channel's per-minute audience (4 h live a day),
streams and chat. The rows are written straight into the database. Then the daily sums are rolled
(timed), and the channel's report (what `GET /api/channels/{name}/analytics` answers) is asked for 7,
28 and 90 days, `--repeat` times each: median and p95. And the admins' site report, and the same
channel's report computed from the raw sessions (no daily sums) for comparison.

`beacons`: the real server (`tally serve`) on a fresh database, a channel live from
loadtest/sfu_forwarding.py's publisher; `--viewers` players each send the watch page's beacon every
10 s (half HLS, half WebRTC), from 50 loopback addresses (the server's per-address limits are those of
production). Server CPU over the window against a window without beacons, the beacons' answer times,
and the viewing-session rows written per second (the server's own counter; on PostgreSQL also
PostgreSQL's tuple counters).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import signal
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(Path(__file__).resolve().parent)]

from harness import cpu_seconds, metric, percentile, server  # noqa: E402

FORWARDING = str(Path(__file__).resolve().parent / "sfu_forwarding.py")
DAY = timedelta(days=1)


@contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "postgres":
        from pg_databases import fresh_database

        with fresh_database("bench_analytics") as url:
            yield url
    else:
        import tempfile

        yield f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='tally-bench-')}/tally.db"


# --- report ------------------------------------------------------------------------------------------

async def fill(url: str, sessions: int, seed: int = 7) -> tuple[int, str]:
    """Channels, streams, minutes, chat and `sessions` viewing sessions; the measured channel's (id, name)."""
    from sqlalchemy import insert

    from signaling.db.database import Database
    from signaling.db.models import AudienceMinute, Channel, ChatMessage, StreamSession, User, ViewerSession
    from signaling.migrations.runner import upgrade

    rng = random.Random(seed)
    db = Database(url)
    await upgrade(db.engine)
    now = datetime.now(UTC)
    start = now - 90 * DAY
    channels = 200
    async with db.session() as session:
        await session.execute(insert(User), [dict(id=n, username=f"user{n}", email=f"user{n}@example.com", role="broadcaster")
                                             for n in range(1, channels + 1)])
        await session.execute(insert(Channel), [dict(id=n, owner_id=n, name=f"user{n}") for n in range(1, channels + 1)])
        streams = [dict(id=f"s{day:02d}", channel_id=1, node="bench", started_at=start + day * DAY + timedelta(hours=18),
                        ended_at=start + day * DAY + timedelta(hours=22)) for day in range(90)]
        await session.execute(insert(StreamSession), streams)
        minutes = [dict(stream_id=s["id"], minute=s["started_at"] + timedelta(minutes=m), transport=t, channel_id=1,
                        peak=rng.randint(50, 400), viewer_seconds=rng.uniform(3000, 24000))
                   for s in streams for m in range(240) for t in ("webrtc", "hls")]
        for at in range(0, len(minutes), 20_000):
            await session.execute(insert(AudienceMinute), minutes[at:at + 20_000])
        await session.execute(insert(ChatMessage), [dict(channel_id=1, user_id=rng.randint(1, channels), text="hi",
                                                         created_at=start + timedelta(seconds=rng.uniform(0, 90 * 86400)))
                                                    for _ in range(20_000)])
    batch: list[dict[str, Any]] = []
    written = 0
    for n in range(sessions):
        channel = 1 if n % 4 == 0 else rng.randint(2, channels)
        began = start + timedelta(seconds=rng.uniform(0, 90 * 86400))
        seconds = rng.expovariate(1 / 900)
        told = n % 2 == 0
        batch.append(dict(
            id=f"b{n}", channel_id=channel, stream_id="", transport="webrtc" if n % 3 else "hls",
            source="player" if told else "node", viewer=f"a:{rng.randint(0, sessions // 3)}", started_at=began,
            last_seen_at=began + timedelta(seconds=seconds), ended_at=began + timedelta(seconds=seconds),
            seconds=seconds, watch_seconds=seconds * 0.98 if told else 0.0,
            startup_ms=rng.randint(300, 3000) if told else None, stalls=rng.randint(0, 3) if told else 0,
            stall_seconds=rng.uniform(0, 3) if told else 0.0, latency_ms=rng.randint(200, 3000) if told else None,
            dropped_frames=rng.randint(0, 50) if told else 0,
            renditions={"720p": seconds * 0.7, "360p": seconds * 0.28} if told else {}))
        if len(batch) == 20_000 or n == sessions - 1:
            async with db.session() as session:
                await session.execute(insert(ViewerSession), batch)
            written += len(batch)
            batch = []
            print(f"  {written} sessions written", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    await db.close()
    return 1, "user1"


async def measure_report(url: str, repeat: int) -> dict[str, Any]:
    from signaling.analytics.report import ChannelAnalytics
    from signaling.analytics.viewing import ViewingBook
    from signaling.db.database import Database

    db = Database(url)
    book = ViewingBook(db, 90)
    began = time.perf_counter()
    days = await book.roll_days()
    roll = time.perf_counter() - began
    analytics = ChannelAnalytics(db)
    out: dict[str, Any] = {"roll_seconds": round(roll, 2), "days_rolled": days}
    for period in (7, 28, 90):
        await analytics._report("user1", 1, period)  # warm: the first touches cold pages
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            report = await analytics._report("user1", 1, period)
            times.append((time.perf_counter() - began) * 1000)
        out[f"channel_{period}d_ms"] = (round(statistics.median(times), 1), round(percentile(times, 0.95), 1))
        out[f"channel_{period}d_sessions"] = sum(report.viewing.sessions.values())
        out[f"channel_{period}d_minutes"] = len(report.minutes)
    times = []
    for _ in range(max(3, repeat // 4)):
        began = time.perf_counter()
        await analytics.site(90)
        times.append((time.perf_counter() - began) * 1000)
    out["site_90d_ms"] = (round(statistics.median(times), 1), round(percentile(times, 0.95), 1))
    # The same 90 days without the daily sums: every session and every minute of the channel read.
    from signaling.analytics.viewing import day_sums
    times = []
    for _ in range(max(3, repeat // 4)):
        began = time.perf_counter()
        async with db.session() as session:
            now = datetime.now(UTC)
            await day_sums(session, now - 90 * DAY, now, 1)
            await analytics._audience(session, 1, now - 90 * DAY, now, by_day=False)
        times.append((time.perf_counter() - began) * 1000)
    out["channel_90d_from_raw_rows_ms"] = round(statistics.median(times), 1)
    await db.close()
    return out


async def settle(url: str) -> None:
    """What a live database's autovacuum would have done by now (PostgreSQL): the planner's statistics
    and the visibility map that lets it answer from an index alone."""
    if url.startswith("postgresql"):
        import asyncpg

        connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await connection.execute("VACUUM ANALYZE")
        finally:
            await connection.close()


def report(args: argparse.Namespace) -> None:
    with ExitStack() as stack:
        url = args.database_url or stack.enter_context(database(args.database))
        if not args.database_url:
            began = time.perf_counter()
            asyncio.run(fill(url, args.sessions))
            print(f"filled in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        asyncio.run(settle(url))
        result = asyncio.run(measure_report(url, args.repeat))
    print(json.dumps({"database": args.database, "sessions": args.sessions, **result}, indent=1))


# --- beacons -----------------------------------------------------------------------------------------

async def players(url: str, viewers: int, seconds: float) -> dict[str, Any]:
    """`viewers` players beaconing every 10 s for `seconds`, spread over 50 loopback addresses."""
    import aiohttp

    addresses = [f"127.0.{n // 250}.{n % 250 + 2}" for n in range(50)]
    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(a, 0), limit=0)) for a in addresses]
    times: list[float] = []
    statuses: dict[int, int] = {}
    end = time.monotonic() + seconds

    async def player(n: int) -> None:
        http = sessions[n % len(sessions)]
        hls = n % 2 == 0
        body: dict[str, Any] = {"session": f"viewing-{n:06d}-{secrets.token_hex(6)}", "viewer": f"page-{n:06d}-{secrets.token_hex(6)}",
                                "transport": "hls" if hls else "webrtc", "startup_ms": 900 + n % 700}
        if not hls:
            body["whep_session"] = secrets.token_urlsafe(24)
        await asyncio.sleep(random.uniform(0, 10))  # players start at random moments
        beats = 0
        while time.monotonic() < end:
            beats += 1
            body.update(watch_seconds=10.0 * beats, latency_ms=300 if not hls else 1500, dropped_frames=beats,
                        renditions={"720p": 10.0 * beats})
            began = time.perf_counter()
            async with http.post(f"{url}/api/channels/bench/watching", json=body) as answer:
                await answer.read()
                statuses[answer.status] = statuses.get(answer.status, 0) + 1
            times.append((time.perf_counter() - began) * 1000)
            await asyncio.sleep(10)

    try:
        await asyncio.gather(*(player(n) for n in range(viewers)))
    finally:
        for http in sessions:
            await http.close()
    return {"beacons": len(times), "statuses": statuses, "answer_ms_p50": round(statistics.median(times), 1),
            "answer_ms_p95": round(percentile(times, 0.95), 1)}


def beacons(args: argparse.Namespace) -> None:
    with ExitStack() as stack:
        url_db = stack.enter_context(database(args.database))
        running = stack.enter_context(server(DATABASE_URL=url_db if args.database == "postgres" else ""))
        key = running.stream_key("bench")
        publisher = subprocess.Popen([sys.executable, FORWARDING, "publish", running.url, "bench", key],
                                     stdout=subprocess.PIPE, text=True)
        stack.callback(lambda: (publisher.send_signal(signal.SIGTERM), publisher.wait(timeout=10)))
        assert publisher.stdout is not None and publisher.stdout.readline().strip() == "PUBLISHING"
        time.sleep(5)
        cpu0, t0 = cpu_seconds(running.pid), time.monotonic()
        time.sleep(args.seconds / 2)
        idle = (cpu_seconds(running.pid) - cpu0) / (time.monotonic() - t0)
        rows0 = metric(running.url, "tally_viewing_rows_written")
        cpu0, t0 = cpu_seconds(running.pid), time.monotonic()
        result = asyncio.run(players(running.url, args.viewers, args.seconds))
        busy = (cpu_seconds(running.pid) - cpu0) / (time.monotonic() - t0)
        window = time.monotonic() - t0
        time.sleep(6)  # the last flush
        rows = metric(running.url, "tally_viewing_rows_written") - rows0
    per_beacon_us = (busy - idle) * window / max(1, result["beacons"]) * 1e6
    print(json.dumps({"database": args.database, "viewers": args.viewers, "window_s": round(window, 1), **result,
                      "beacons_per_s": round(result["beacons"] / window, 1),
                      "server_cpu_idle_pct": round(idle * 100, 1), "server_cpu_beacons_pct": round(busy * 100, 1),
                      "cpu_us_per_beacon": round(per_beacon_us), "session_rows_written_per_s": round(rows / window, 1)},
                     indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report")
    r.add_argument("--sessions", type=int, default=1_000_000)
    r.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    r.add_argument("--repeat", type=int, default=20)
    r.add_argument("--database-url", default="", help="a database filled by an earlier run (kept): no fill")
    b = sub.add_parser("beacons")
    b.add_argument("--viewers", type=int, default=1000)
    b.add_argument("--seconds", type=float, default=60)
    b.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    args = parser.parse_args()
    {"report": report, "beacons": beacons}[args.command](args)


if __name__ == "__main__":
    main()
