"""Two signaling processes on one real Redis and one PostgreSQL: one conversation, in one order."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from support import SECRETS_KEYS, free_port, wait_ready

REPO = Path(__file__).resolve().parents[1]
# A database of its own, emptied first: rate-limit state other tests left (some on a fake clock years
# ahead) must not refuse these servers' sign-ups. Pub/sub is shared across Redis databases anyway.
REDIS_URL = os.environ.get("TALLY_TEST_REDIS_CHAT", "redis://127.0.0.1:6379/9")
# The PostgreSQL test database, emptied first too: what earlier tests sealed with their own keys must not
# stop these servers' start (they check that their SECRETS_KEYS open the database's secrets).
pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@pytest.fixture
def two_servers(database_url: str, tmp_path: Path) -> Iterator[tuple[list[str], list[subprocess.Popen[bytes]]]]:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    secret = secrets.token_hex(32)  # both processes must accept each other's tokens
    processes, urls = [], []
    for i in range(2):
        port = free_port()
        env = {**os.environ, "DATA_DIR": str(tmp_path / f"node{i}"), "HOST": "127.0.0.1", "PORT": str(port),
               "DATABASE_URL": database_url, "BUS_URL": REDIS_URL, "JWT_SECRET": secret, "NODE_ID": f"node{i}",
               "SECRETS_KEYS": SECRETS_KEYS,
               "ARGON2_TIME_COST": "1", "ARGON2_MEMORY_COST": "8", "PUBLIC_URL": "", "CHAT_POSTS_PER_10S": "1000",
               "RATE_REGISTER_PER_HOUR": "1000", "RATE_LOGIN_PER_MINUTE": "1000"}
        with (tmp_path / f"node{i}.log").open("wb") as log:
            processes.append(subprocess.Popen([sys.executable, "-m", "signaling.cli", "serve"], cwd=REPO, env=env,
                                              stdout=log, stderr=subprocess.STDOUT))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for i, (url, process) in enumerate(zip(urls, processes)):
            wait_ready(url, process, tmp_path / f"node{i}.log")
        yield urls, processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            assert process.wait(timeout=15) == 0


async def account(http: aiohttp.ClientSession, url: str, name: str) -> str:
    body = {"username": name, "email": f"{name}@example.com", "password": "correct horse"}
    async with http.post(url + "/api/auth/register", json=body) as response:
        assert response.status == 201, await response.text()
    async with http.post(url + "/api/auth/login", json={"username": name, "password": "correct horse"}) as response:
        return str((await response.json())["access_token"])


class Listener:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    async def until(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for frame in self.frames:
                    if predicate(frame):
                        return frame
                message = await self.ws.receive()
                assert message.type == aiohttp.WSMsgType.TEXT, message
                self.frames.append(json.loads(message.data))


async def test_a_post_on_one_process_reaches_a_viewer_on_the_other(two_servers: Any) -> None:
    (a, b), _ = two_servers
    async with aiohttp.ClientSession() as http:
        owner = "owner" + secrets.token_hex(3)
        await account(http, a, "first" + secrets.token_hex(3))  # the first account is an admin
        owner_token = await account(http, a, owner)
        fan_token = await account(http, b, "fan" + secrets.token_hex(3))
        on_a = Listener(await http.ws_connect(f"{a.replace('http', 'ws')}/ws?channel={owner}"))
        on_b = Listener(await http.ws_connect(f"{b.replace('http', 'ws')}/ws?channel={owner}"))
        for listener, token in ((on_a, owner_token), (on_b, fan_token)):
            await listener.until(lambda f: f["type"] == "welcome")
            await listener.ws.send_json({"type": "auth", "token": token})
            await listener.until(lambda f: f["type"] == "you" and f["can_post"])

        for i in range(10):  # both sides post, interleaved
            await on_a.ws.send_json({"type": "send", "text": f"a{i}"})
            await on_b.ws.send_json({"type": "send", "text": f"b{i}"})
        texts = {f"a{i}" for i in range(10)} | {f"b{i}" for i in range(10)}
        for listener in (on_a, on_b):
            await listener.until(lambda f: f["type"] == "message" and f["text"] == "b9")
            await listener.until(lambda f, seen=listener: {m["text"] for m in seen.frames if m["type"] == "message"} >= texts)
        order_a = [f["id"] for f in on_a.frames if f["type"] == "message"]
        order_b = [f["id"] for f in on_b.frames if f["type"] == "message"]
        assert order_a == order_b and len(order_a) == 20  # one conversation, one order, on both processes

        # A deletion through one process reaches the other; the history agrees.
        victim = next(f for f in on_a.frames if f["type"] == "message" and f["text"] == "b3")
        async with http.delete(f"{b}/api/channels/{owner}/chat/{victim['id']}", headers={"Authorization": f"Bearer {owner_token}"}) as response:
            assert response.status == 204
        await on_a.until(lambda f: f["type"] == "deleted" and f["id"] == victim["id"])
        async with http.get(f"{a}/api/channels/{owner}/chat?limit=200") as response:
            history = [m["text"] for m in (await response.json())["messages"]]
        assert len(history) == 19 and "b3" not in history
        await on_a.ws.close()
        await on_b.ws.close()


async def test_sigterm_closes_chat_connections_and_exits_promptly(two_servers: Any) -> None:
    (a, b), (process, _) = two_servers
    async with aiohttp.ClientSession() as http:
        await account(http, a, "first" + secrets.token_hex(3))
        owner = "owner" + secrets.token_hex(3)
        await account(http, a, owner)
        listener = Listener(await http.ws_connect(f"{a.replace('http', 'ws')}/ws?channel={owner}"))
        await listener.until(lambda f: f["type"] == "welcome")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        message = await asyncio.wait_for(listener.ws.receive(), 10)
        while message.type == aiohttp.WSMsgType.TEXT:
            message = await asyncio.wait_for(listener.ws.receive(), 10)
        # The code in the server's close frame: the client's own close_code can end up 1006 when the
        # server, shutting down, drops the socket while the client is still sending its reply.
        assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1001, message
        assert await asyncio.get_running_loop().run_in_executor(None, lambda: process.wait(timeout=10)) == 0
        assert time.monotonic() - started < 5
