"""Notifications with the real server and database: followers hear when a channel goes live (after the
settle time, not again within the cooldown, never for a false start), as their bells and settings say,
in the app and live over the WebSocket; webhooks are signed, retried after a 500 and given up on a 4xx;
reminders come before scheduled streams; and any number of workers share the outbox without doing a
job twice."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack
from pathlib import Path
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from signaling.app import SERVICES
from signaling.db.database import Database
from signaling.notifications.outbox import Job, Outbox
from signaling.notifications.worker import Worker
from http_client import Client
from redis_server import redis_server
from server_process import REPO_ROOT, serve, server_env, tally
from support import Api, FakeClock, free_port
from test_chat import WsClient
from test_whip_whep import go_live, stream_key, until
from webrtc_peer import Peer


class Receiver:
    """A webhook receiver on loopback: checks each delivery's signature, answers with the next status."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}  # path -> the hook's secret
        self.statuses: dict[str, list[int]] = {}  # path -> statuses still to answer (then 204)
        self.got: dict[str, list[dict[str, Any]]] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.read()
        stamp, _, digest = request.headers["X-Tallylight-Signature"].partition(",v1=")
        at = stamp.removeprefix("t=")
        expected = hmac.new(self.secrets[path].encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, digest):
            return web.Response(status=401)
        self.got.setdefault(path, []).append({"body": json.loads(body), "event": request.headers["X-Tallylight-Event"]})
        queued = self.statuses.get(path) or []
        return web.Response(status=queued.pop(0) if queued else 204)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def live(app_factory: Callable[..., web.Application], clock: FakeClock) -> AsyncIterator[Api]:
    app = app_factory(webrtc_host_addresses=["127.0.0.1"], publisher_timeout=1.5, outbound_allow_private=True)
    async with TestClient(TestServer(app)) as client:
        yield Api(client, app[SERVICES], clock)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    await found.start()
    yield found
    await found.close()


async def notes(api: Api, token: str) -> dict[str, Any]:
    status, body, _ = await api.call("GET", "/api/me/notifications", token=token)
    assert status == 200, body
    return dict(body)


async def outbox_empty(api: Api) -> bool:
    waiting, failed = await Outbox(api.services.db).counts()
    return waiting == 0


async def test_followers_hear_of_a_go_live_as_their_bells_say_and_webhooks_are_signed_and_retried(
    live: Api, receiver: Receiver
) -> None:
    star, star_token = await live.user()
    fans = {bell: await live.user() for bell in ("all", "live", "none", "quiet")}
    for bell, (_, token) in fans.items():
        body = None if bell == "all" else {"notify": "none" if bell == "none" else "live" if bell == "live" else "all"}
        status, followed, _ = await live.call("PUT", f"/api/channels/{star}/follow", body, token=token)
        assert status == 200 and followed["notify"] == (bell if bell in ("all", "live", "none") else "all"), followed
    status, prefs, _ = await live.call("PUT", "/api/me/notification-settings", {"in_app": False}, token=fans["quiet"][1])
    assert status == 200 and prefs == {"in_app": False, "push": True, "email": False, "email_verified": False,
                                       "email_available": False}
    assert (await live.call("GET", f"/api/channels/{star}", token=fans["live"][1]))[1]["notify"] == "live"

    live.clock.advance(1)  # those follows happened before the hooks exist: they hear nothing of them
    hooks = {}
    for path, fmt, events in (("plain", "json", ["live", "ended", "follow"]), ("discord", "discord", ["live"])):
        status, hook, _ = await live.call("POST", f"/api/channels/{star}/webhooks",
                                          {"url": f"{receiver.url}/{path}", "events": events, "format": fmt}, token=star_token)
        assert status == 201 and len(hook["secret"]) >= 32, hook
        receiver.secrets[path] = hook["secret"]
        hooks[path] = hook
    listed = (await live.call("GET", f"/api/channels/{star}/webhooks", token=star_token))[1]["items"]
    assert [h["secret"] for h in listed] == [None, None]  # shown once, at creation

    # A new follower after the hooks exist: the plain hook hears of it.
    newcomer, newcomer_token = await live.user()
    assert (await live.call("PUT", f"/api/channels/{star}/follow", token=newcomer_token))[0] == 200
    await until(lambda: _got(receiver, "plain", "follow"))
    assert receiver.got["plain"][0]["body"]["follower"]["username"] == newcomer
    receiver.statuses["plain"] = [500]  # the go-live delivery fails at first: it is tried again

    socket = WsClient(await live.client.ws_connect("/ws"))  # no channel: the user's notifications only
    await socket.expect(lambda f: f["type"] == "you" and f["username"] is None)
    await socket.send({"type": "auth", "token": fans["all"][1]})
    await socket.expect(lambda f: f["type"] == "you" and f["username"] == fans["all"][0])

    key = await stream_key(live, star_token)
    publisher, _ = await go_live(live, star, key)
    await until(lambda: is_live(live, star))
    await asyncio.sleep(1.5)  # the worker looks (every second): nothing is due before the settle time
    assert (await notes(live, fans["all"][1]))["items"] == []
    live.clock.advance(31)
    await until(lambda: _count(live, fans["all"][1], 1))
    first = (await notes(live, fans["all"][1]))
    assert first["unread"] == 1 and first["items"][0]["kind"] == "live" and first["items"][0]["channel"] == star
    assert first["items"][0]["url"] == f"/watch/{star}"
    assert (await notes(live, fans["live"][1]))["unread"] == 1
    assert (await notes(live, fans["none"][1]))["items"] == []
    assert (await notes(live, fans["quiet"][1]))["items"] == []  # in-app is off for this one
    frame = await socket.expect(lambda f: f["type"] == "notification")
    assert frame["kind"] == "live" and frame["channel"] == star and frame["url"] == f"/watch/{star}"

    await until(lambda: _got(receiver, "discord", "live"))
    discord = receiver.got["discord"][0]["body"]
    assert star in discord["content"] and discord["allowed_mentions"] == {"parse": []}
    await until(lambda: _last_status(live, star, star_token, hooks["plain"]["id"], 500))  # the 500: stored...
    assert sum(1 for g in receiver.got["plain"] if g["event"] == "live") == 1
    live.clock.advance(15)  # ...and tried again after its backoff (10 s ± 20 %)
    await until(lambda: _got(receiver, "plain", "live", 2))
    body = receiver.got["plain"][-1]["body"]
    assert body["event"] == "stream.live" and body["channel"]["name"] == star and body["stream"]["id"]

    # The broadcaster drops and comes back: within the cooldown, nobody is told again.
    await publisher.close()
    await until(lambda: is_live(live, star, False))
    publisher, _ = await go_live(live, star, key)
    await until(lambda: is_live(live, star))
    live.clock.advance(31)
    await until(lambda: outbox_empty(live))
    assert (await notes(live, fans["all"][1]))["unread"] == 1

    # After the cooldown, a false start (over before it settled) tells nobody either.
    await publisher.close()
    await until(lambda: is_live(live, star, False))
    live.clock.advance(560)  # (access tokens live 900 s: the test stays inside them)
    publisher, _ = await go_live(live, star, key)
    await until(lambda: is_live(live, star))
    await publisher.close()
    await until(lambda: is_live(live, star, False))
    live.clock.advance(31)
    await until(lambda: outbox_empty(live))
    assert (await notes(live, fans["all"][1]))["unread"] == 1

    # Read, one by id and then all; the bell can be turned down.
    status, read, _ = await live.call("POST", "/api/me/notifications/read", {"ids": [first["items"][0]["id"]]},
                                      token=fans["all"][1])
    assert status == 200 and read == {"unread": 0}
    assert (await live.call("POST", "/api/me/notifications/read", {}, token=fans["live"][1]))[1] == {"unread": 0}
    status, bell, _ = await live.call("PUT", f"/api/channels/{star}/follow", {"notify": "none"}, token=fans["all"][1])
    assert status == 200 and bell["notify"] == "none" and bell["followers"] == 5
    await socket.close()


async def _got(receiver: Receiver, path: str, event: str, count: int = 1) -> bool:
    return sum(1 for g in receiver.got.get(path, []) if g["event"] == event) >= count


async def _last_status(api: Api, name: str, token: str, hook: int, status: int) -> bool:
    listed = (await api.call("GET", f"/api/channels/{name}/webhooks", token=token))[1]["items"]
    return any(h["id"] == hook and h["last_status"] == status for h in listed)


async def is_live(api: Api, name: str, live: bool = True) -> bool:
    return bool((await api.call("GET", f"/api/channels/{name}"))[1]["is_live"]) is live


async def _count(api: Api, token: str, count: int) -> bool:
    return len((await notes(api, token))["items"]) >= count


async def test_bad_input_changes_nothing(api: Api) -> None:
    star, star_token = await api.user()
    fan, fan_token = await api.user()
    path = f"/api/channels/{star}/webhooks"
    bad: list[Any] = [
        {"url": "ftp://example.com/x", "events": ["live"]},
        {"url": "https://user:pw@example.com/x", "events": ["live"]},
        {"url": "http://127.0.0.1:9/x", "events": ["live"]},  # inside the operator's network
        {"url": "http://[::1]/x", "events": ["live"]},
        {"url": "http://localhost/x", "events": ["live"]},
        {"url": "http://[64:ff9b::a00:1]/x", "events": ["live"]},  # NAT64 of 10.0.0.1
        {"url": "http://127.1/x", "events": ["live"]},
        {"url": "http://[::1", "events": ["live"]},
        {"url": "http://exa mple.com/", "events": ["live"]},
        {"url": "http://example.com:99999/", "events": ["live"]},
        {"url": "https://example.com/x", "events": []},
        {"url": "https://example.com/x", "events": ["nope"]},
        {"url": "https://example.com/x", "events": ["live"], "format": "xml"},
        {"url": "https://example.com/" + "x" * 600, "events": ["live"]},
        {"events": ["live"]},
    ]
    for body in bad:
        status, problem, _ = await api.call("POST", path, body, token=star_token)
        assert status == 422, (body, status, problem)
    assert (await api.call("POST", path, {"url": "https://example.com/x", "events": ["live"]}, token=fan_token))[0] == 403
    for n in range(5):
        assert (await api.call("POST", path, {"url": f"https://example.com/{n}", "events": ["live"]}, token=star_token))[0] == 201
    assert (await api.call("POST", path, {"url": "https://example.com/6", "events": ["live"]}, token=star_token))[0] == 409
    assert (await api.call("DELETE", f"{path}/999999", token=star_token))[0] == 404
    assert len((await api.call("GET", path, token=star_token))[1]["items"]) == 5

    for body in ({"notify": "loud"}, {"notify": None}, {"bell": "all"}):
        assert (await api.call("PUT", f"/api/channels/{star}/follow", body, token=fan_token))[0] == 422
    assert (await api.call("GET", f"/api/channels/{star}", token=fan_token))[1]["following"] is False
    for body in ({"in_app": "yes"}, {"sms": True}):
        assert (await api.call("PUT", "/api/me/notification-settings", body, token=fan_token))[0] == 422
    for body in ({"ids": [0]}, {"ids": list(range(1, 300))}, {"all": True}, {"ids": [2**31]}, {"ids": [2**63]}):
        assert (await api.call("POST", "/api/me/notifications/read", body, token=fan_token))[0] == 422
    assert (await api.call("GET", "/api/me/notifications?limit=0", token=fan_token))[0] == 422
    assert (await api.call("GET", "/api/me/notifications"))[0] == 401


async def test_followers_who_want_everything_are_reminded_before_a_scheduled_stream(api: Api) -> None:
    star, star_token = await api.user()
    everything, everything_token = await api.user()
    live_only, live_only_token = await api.user()
    await api.call("PUT", f"/api/channels/{star}/follow", token=everything_token)
    await api.call("PUT", f"/api/channels/{star}/follow", {"notify": "live"}, token=live_only_token)
    starts = datetime.fromtimestamp(api.clock(), UTC) + timedelta(hours=1)
    status, entry, _ = await api.call("POST", f"/api/channels/{star}/schedule",
                                      {"title": "Speedrun night", "starts_at": starts.isoformat()}, token=star_token)
    assert status == 201
    moved = await api.call("POST", f"/api/channels/{star}/schedule",
                           {"title": "Gone soon", "starts_at": (starts + timedelta(hours=2)).isoformat()}, token=star_token)
    assert (await api.call("DELETE", f"/api/channels/{star}/schedule/{moved[1]['id']}", token=star_token))[0] == 204
    api.clock.advance(44 * 60)
    await asyncio.sleep(1.5)
    assert (await notes(api, (await api.login(everything))["access_token"]))["items"] == []  # not yet: 15 min before
    api.clock.advance(61)
    everything_token = (await api.login(everything))["access_token"]  # (the first one expired meanwhile)
    live_only_token = (await api.login(live_only))["access_token"]
    await until(lambda: _count(api, everything_token, 1))
    item = (await notes(api, everything_token))["items"][0]
    assert item["kind"] == "reminder" and item["body"] == "Speedrun night" and "in 15 min" in item["title"]
    api.clock.advance(3 * 3600)  # the deleted entry's reminder comes due: it reminds nobody
    await until(lambda: outbox_empty(api))
    assert len((await notes(api, (await api.login(everything))["access_token"]))["items"]) == 1
    assert (await notes(api, (await api.login(live_only))["access_token"]))["items"] == []
    assert entry["id"]


async def test_workers_share_the_outbox_and_take_over_a_dead_workers_jobs(database_url: str) -> None:
    db = Database(database_url)
    from signaling.migrations.runner import upgrade

    await upgrade(db.engine)
    clock = FakeClock()
    outbox = Outbox(db)
    done: list[tuple[str, int]] = []

    def handler(worker: str) -> Callable[[Job], Any]:
        async def handle(job: Job) -> None:
            await asyncio.sleep(0.001)
            done.append((worker, int(job.payload["n"])))
        return handle

    try:
        now = datetime.fromtimestamp(clock(), UTC)
        for n in range(300):
            await outbox.add("count", {"n": n}, now)
        workers = [Worker(outbox, {"count": handler(name)}, {"count": 16}, clock, name=name) for name in ("a", "b", "c")]
        assert len({w.name for w in workers}) == 3  # told apart by a token, whatever they are called

        async def drain(worker: Worker) -> None:
            while await worker.run_due():
                pass

        await asyncio.gather(*(drain(w) for w in workers))
        assert sorted(n for _, n in done) == list(range(300))  # each job exactly once
        assert len({w for w, _ in done}) >= 2 or database_url.startswith("sqlite")  # shared (PostgreSQL: side by side)

        # A worker takes no more of a kind than it has room for, and nothing of kinds it does not run.
        for n in range(5):
            await outbox.add("count", {"n": 2000 + n}, now)
            await outbox.add("unknown", {"n": n}, now)
        taken = await outbox.claim("picky", now, {"count": 2}, lease=120)
        assert [j.kind for j in taken] == ["count", "count"]
        clock.advance(121)
        now = datetime.fromtimestamp(clock(), UTC)
        assert len(await outbox.claim("picky", now, {"count": 16}, lease=120)) == 5
        done.extend(("picky", 2000 + n) for n in range(5))
        await Outbox(db).tidy(now)
        from sqlalchemy import delete as sql_delete

        from signaling.db.models import OutboxJob
        await db.write(sql_delete(OutboxJob))

        # A worker that dies holding a job: another takes it once the lease runs out.
        await outbox.add("count", {"n": 1000}, now)
        held = await outbox.claim("dead", now, {"count": 10}, lease=120)
        assert [j.payload["n"] for j in held] == [1000]
        assert await workers[0].run_due() == 0
        clock.advance(121)
        assert await workers[0].run_due() == 1 and done[-1] == ("a", 1000)
        assert await outbox.counts() == (0, 0)
    finally:
        await db.close()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_in_a_cluster_tally_worker_processes_tell_the_fans_at_a_front_door(tmp_path: Path, database_url: str) -> None:
    """The distributed mode: a front door, a media node and two `tally worker`s meet on Redis and
    PostgreSQL; the broadcaster publishes through the door, a worker tells the fans, and the fan's
    WebSocket at the door hears it; each fan is told once, though two workers share the outbox."""
    with redis_server(tmp_path) as redis, ExitStack() as stack:
        common = {"BUS_URL": redis.url, "DATABASE_URL": database_url, "AUTO_MIGRATE": "false",
                  "JWT_SECRET": secrets.token_hex(32), "LOG_LEVEL": "INFO", "NOTIFY_SETTLE": "0"}
        for name in ("node", "door", "w1", "w2"):
            (tmp_path / name).mkdir()
        stack.enter_context(serve(tmp_path / "node", ("node",), NODE_ID="node-1", WEBRTC_HOST_ADDRESSES="127.0.0.2", **common))
        door_process = stack.enter_context(serve(tmp_path / "door", ("serve", "--media", "off"), NODE_ID="door", **common))
        workers = [_worker(stack, tmp_path / name, f"worker-{name}", common) for name in ("w1", "w2")]
        async with aiohttp.ClientSession() as http:
            door = Client(http, door_process.url)
            await door.admin("boss")
            key = await door.broadcaster("caster")
            tokens = []
            for n in range(3):
                await door.broadcaster(f"fan{n}")
                status, login = await door.call("POST", "/api/auth/login", {"username": f"fan{n}", "password": "correct horse"})
                tokens.append(login["access_token"])
                assert (await door.call("PUT", "/api/channels/caster/follow", token=tokens[-1]))[0] == 200
            async with http.ws_connect(door.url + "/ws") as ws:
                await ws.send_json({"type": "auth", "token": tokens[0]})
                while (await ws.receive_json(timeout=5)).get("username") != "fan0":
                    pass
                publisher = Peer.publisher("h264")
                try:
                    await door.connect(publisher, "/whip/caster", key)
                    frame = await ws.receive_json(timeout=15)
                    while frame["type"] != "notification":
                        frame = await ws.receive_json(timeout=15)
                    assert frame["kind"] == "live" and frame["channel"] == "caster"
                finally:
                    await publisher.close()
            for token in tokens:
                status, listing = await door.call("GET", "/api/me/notifications", token=token)
                assert status == 200 and [i["kind"] for i in listing["items"]] == ["live"], listing
    logs = "".join(path.read_text() for path in tmp_path.glob("*/worker.log"))
    assert "Traceback" not in logs and all(w.returncode == 0 for w in workers), logs[-3000:]


def _worker(stack: ExitStack, home: Path, name: str, common: dict[str, str]) -> subprocess.Popen[bytes]:
    """A `tally worker` process, stopped with SIGTERM when the stack closes (and it must exit 0 soon)."""
    log = (home / "worker.log").open("wb")
    process = subprocess.Popen(tally("worker"), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                               env=server_env(home, free_port(), NODE_ID=name, **common))

    def stop() -> None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        finally:
            log.close()
            if process.returncode is None:
                process.kill()

    stack.callback(stop)
    deadline = time.monotonic() + 30
    while b"notification worker" not in (home / "worker.log").read_bytes():
        assert process.poll() is None and time.monotonic() < deadline, (home / "worker.log").read_text()
        time.sleep(0.1)
    return process
