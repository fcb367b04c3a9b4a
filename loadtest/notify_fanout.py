"""Benchmark: a channel with many followers goes live; how long until every follower is told.

    .venv/bin/python loadtest/notify_fanout.py --followers 10000 --database postgres --rounds 3

The real server (`tally serve`, its worker inside), on PostgreSQL (a fresh database per round) or the
embedded SQLite. `--followers` accounts follow the channel `bench`, each with in-app notifications and
one browser subscribed to push at a push service stand-in (another process: it answers 201 to each
push, checks the VAPID JWT of the first and decrypts one push in a hundred with the subscription's
keys, tests/push_service.py). The accounts, follows and subscriptions are written straight into the
database before the round (signing up 10,000 users through the API would measure argon2).

The channel goes live with loadtest/sfu_forwarding.py's publisher (720p H.264 ~1.4 Mbit/s + Opus)
and `--viewers` lean viewers watch it. The go-live notification becomes due `--settle` seconds after
the stream starts. Figures per round, from that moment: when every in-app notification is stored,
when every push has been accepted by the stand-in; the database's rows written per follower
(PostgreSQL's own counters); and the viewers' loss and forwarding delay p99 in a window without the
fan-out and in one that holds it. Medians over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(Path(__file__).resolve().parent)]

from harness import http, server  # noqa: E402

FORWARDING = str(Path(__file__).resolve().parent / "sfu_forwarding.py")


# --- the push service stand-in (its own process) -----------------------------------------------------

def push_service(port: int) -> None:
    from aiohttp import web

    from push_service import Browser, PushService

    browser = Browser("fan")
    keys = Path(os.environ["BENCH_KEYS"])
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
    keys.write_text(json.dumps({
        "pem": browser.private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode(),
        "auth": browser.auth.hex(), "subscription": browser.subscription("x")["keys"]}))
    service = PushService([browser])
    state = {"accepted": 0, "checked": 0, "problems": [], "last": 0.0}

    async def push(request: web.Request) -> web.Response:
        body = await request.read()
        state["accepted"] += 1
        state["last"] = time.time()
        if state["accepted"] % 100 == 1:  # check the VAPID JWT and decrypt one in a hundred
            problem = service._check(request)
            try:
                json.loads(browser.decrypt(body))
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                problem = problem or f"cannot decrypt: {exc!r}"
            if problem:
                state["problems"].append(problem)
            state["checked"] += 1
        return web.Response(status=201)

    async def count(request: web.Request) -> web.Response:
        return web.json_response(state)

    app = web.Application()
    app.router.add_post("/push/{name}", push)
    app.router.add_get("/count", count)
    service.url = f"http://127.0.0.1:{port}"
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- seeding ---------------------------------------------------------------------------------------

async def seed(database_url: str, channel: str, followers: int, push_url: str, keys: dict[str, Any]) -> None:
    from sqlalchemy import insert, select

    from signaling.db.database import Database
    from signaling.db.models import Channel, Follow, PushSubscription, User

    db = Database(database_url)
    try:
        async with db.session() as session:
            channel_id = await session.scalar(select(Channel.id).where(Channel.name == channel))
            now = datetime.now(UTC)
            for start in range(0, followers, 2000):
                users = [{"username": f"fan{n}", "email": f"fan{n}@example.com", "role": "viewer", "password_hash": None,
                          "email_verified": False, "display_name": "", "bio": "", "created_at": now, "updated_at": now,
                          "notify_in_app": True, "notify_push": True, "notify_email": False}
                         for n in range(start, min(followers, start + 2000))]
                ids = list(await session.scalars(insert(User).returning(User.id), users))
                await session.execute(insert(Follow), [{"follower_id": i, "channel_id": channel_id, "created_at": now,
                                                        "notify": "all"} for i in ids])
                await session.execute(insert(PushSubscription), [
                    {"user_id": i, "endpoint": f"{push_url}/push/fan{i}", "p256dh": keys["p256dh"], "auth": keys["auth"],
                     "created_at": now} for i in ids])
    finally:
        await db.close()


async def told(database_url: str, push_url: str, followers: int, until: float) -> tuple[float | None, float | None]:
    """When every follower's in-app notification was stored, and when the stand-in accepted the last push
    (wall clock; None if not by `until`)."""
    from sqlalchemy import func, select

    from signaling.db.database import Database
    from signaling.db.models import Notification

    db = Database(database_url)
    stored_at = pushed_at = None
    try:
        while time.time() < until and (stored_at is None or pushed_at is None):
            if stored_at is None:
                async with db.session() as session:
                    if int(await session.scalar(select(func.count()).select_from(Notification)) or 0) >= followers:
                        stored_at = time.time()
            state = json.loads((await asyncio.to_thread(http, "GET", push_url + "/count"))[1])
            if pushed_at is None and state["accepted"] >= followers:
                pushed_at = float(state["last"])
            await asyncio.sleep(0.1)
    finally:
        await db.close()
    return stored_at, pushed_at


def pg_rows(database_url: str) -> int:
    """Rows PostgreSQL has inserted, updated and deleted in the database so far."""
    import asyncpg

    async def read() -> int:
        name = database_url.rsplit("/", 1)[1]
        connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await connection.execute("SELECT pg_stat_clear_snapshot()")
            row = await connection.fetchrow("SELECT tup_inserted + tup_updated + tup_deleted AS n FROM pg_stat_database "
                                            "WHERE datname = $1", name)
            return int(row["n"])
        finally:
            await connection.close()

    return asyncio.run(read())


# --- one round -------------------------------------------------------------------------------------

def watch(url: str, viewers: int, seconds: float, pid: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, FORWARDING, "watch", url, "bench", str(viewers), str(seconds), str(pid)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result_of(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate(timeout=300)
    line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"the viewers failed: {out[-2000:]} {err[-2000:]}")
    return dict(json.loads(line[7:]))


def one_round(followers: int, viewers: int, settle: float, database: str) -> dict[str, Any]:
    from support import free_port

    with ExitStack() as stack:
        database_url = ""
        if database == "postgres":
            from pg_databases import fresh_database

            database_url = stack.enter_context(fresh_database("bench_notify"))
        port = free_port()
        keys_file = Path(f"/tmp/bench-push-keys-{os.getpid()}.json")
        keys_file.unlink(missing_ok=True)
        push = subprocess.Popen([sys.executable, __file__, "push-service", str(port)], env={**os.environ, "BENCH_KEYS": str(keys_file)})
        stack.callback(lambda: (push.send_signal(signal.SIGTERM), push.wait(timeout=10)))
        push_url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if keys_file.exists() and http("GET", push_url + "/count")[0] == 200:
                    break
            except OSError:
                pass  # not listening yet
            time.sleep(0.1)
        keys = json.loads(keys_file.read_text())["subscription"]
        settings = {"NOTIFY_SETTLE": str(settle), "OUTBOUND_ALLOW_PRIVATE": "true", "MAX_VIEWERS_PER_NODE": "1000",
                    "RATE_WHEP_PER_MINUTE": "100000", "MAX_PENDING_SESSIONS": "1000", "MAX_PENDING_PER_CLIENT": "1000",
                    "DATABASE_URL": database_url}
        running = stack.enter_context(server(**settings))
        url = running.url
        db_url = database_url or f"sqlite+aiosqlite:///{running.data / 'tallylight.db'}"
        key = running.stream_key("bench")
        started = time.monotonic()
        asyncio.run(seed(db_url, "bench", followers, push_url, keys))
        seeded = time.monotonic() - started
        rows_before = pg_rows(database_url) if database_url else 0

        publisher = subprocess.Popen([sys.executable, FORWARDING, "publish", url, "bench", key], stdout=subprocess.PIPE, text=True)
        stack.callback(lambda: (publisher.send_signal(signal.SIGTERM), publisher.wait(timeout=10)))
        assert publisher.stdout is not None and publisher.stdout.readline().strip() == "PUBLISHING"
        for _ in range(100):
            channel = json.loads(http("GET", url + "/api/channels/bench")[1])
            if channel["live_since"]:
                break
            time.sleep(0.1)
        live_since = datetime.fromisoformat(channel["live_since"]).timestamp()
        due = live_since + settle
        # A window well before the fan-out, then one that holds it.
        quiet = result_of(watch(url, viewers, max(3.0, settle - 12), running.pid))
        busy_window = 14.0
        busy = watch(url, viewers, busy_window, running.pid)  # joins, waits ~3 s for pictures, then measures
        stored_at, pushed_at = asyncio.run(told(db_url, push_url, followers, due + 120))
        during = result_of(busy)
        rows = (pg_rows(database_url) - rows_before) if database_url else float("nan")
        _, counted, _ = http("GET", push_url + "/count")
        state = json.loads(counted)
        return {
            "followers": followers, "seeded_s": seeded,
            "in_app_s": (stored_at - due) if stored_at else float("nan"),
            "push_s": (pushed_at - due) if pushed_at else float("nan"),
            "pushes": state["accepted"], "checked": state["checked"], "push_problems": state["problems"][:3],
            "rows_per_follower": rows / followers,
            "quiet_loss_pct": quiet["loss_pct"], "quiet_delay_p99_ms": quiet["delay_p99_ms"],
            "busy_loss_pct": during["loss_pct"], "busy_delay_p99_ms": during["delay_p99_ms"],
            "busy_server_cpu_pct": during["server_cpu_pct"], "quiet_server_cpu_pct": quiet["server_cpu_pct"],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    ps = sub.add_parser("push-service")
    ps.add_argument("port", type=int)
    parser.add_argument("--followers", type=int, default=10_000)
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--settle", type=float, default=25.0)
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.command == "push-service":
        push_service(args.port)
        return
    results = []
    for _ in range(args.rounds):
        result = one_round(args.followers, args.viewers, args.settle, args.database)
        print(json.dumps(result), flush=True)
        results.append(result)
    print()
    print(f"{args.followers} followers, {args.database}, {args.viewers} viewers, medians of {args.rounds} rounds:")
    for name in ("in_app_s", "push_s", "rows_per_follower", "quiet_loss_pct", "busy_loss_pct", "quiet_delay_p99_ms",
                 "busy_delay_p99_ms", "quiet_server_cpu_pct", "busy_server_cpu_pct"):
        print(f"  {name}: {statistics.median(r[name] for r in results):.2f}")


if __name__ == "__main__":
    main()
