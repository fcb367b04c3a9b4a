"""`tally cluster`: one command runs a front door and media nodes on this machine, keeps them running
and stops them all on SIGTERM. The nodes share one RTMP port: an encoder goes live on one of them, and
the door tells encoders the URL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from http_client import Client
from redis_server import redis_server
from server_process import REPO_ROOT, server_env, tally
from support import free_port, wait_ready
from test_rtmp_session import ffmpeg


def children(pid: int) -> dict[str, int]:
    """The supervisor's child processes by NODE_ID."""
    found = {}
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        node = next((e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"NODE_ID=")), "?")
        found[node] = int(child)
    return found


def refused(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(tally("cluster", *args), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                          env=server_env(Path("/nonexistent"), free_port(), **settings))


def test_a_cluster_needs_redis_and_postgresql() -> None:
    assert "BUS_URL" in refused().stderr
    assert "DATABASE_URL" in refused(BUS_URL="redis://127.0.0.1:6379/0").stderr
    assert refused("--nodes", "0").returncode == 2


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_one_command_runs_a_door_and_nodes_restarts_a_dead_node_and_stops_them_all(
        tmp_path: Path, database_url: str) -> None:
    with redis_server(tmp_path) as redis:
        port, rtmp = _three_free_ports(), free_port()
        env = server_env(tmp_path / "var", port, BUS_URL=redis.url, DATABASE_URL=database_url, JWT_SECRET="",
                         RTMP_PORT=str(rtmp))
        log = tmp_path / "cluster.log"
        with log.open("wb") as out:
            supervisor = subprocess.Popen(tally("cluster", "--nodes", "2"), cwd=REPO_ROOT, env=env,
                                          stdout=out, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            await asyncio.to_thread(wait_ready, url, supervisor, log, 60)
            async with aiohttp.ClientSession() as http:
                door = Client(http, url)
                admin = await door.admin("boss")  # the door's token is good on every node: one JWT key

                async def started() -> dict[str, str]:
                    """When each listed node started."""
                    status, body = await door.call("GET", "/api/cluster", token=admin)
                    return {n["id"]: n["started_at"] for n in body["nodes"]} if status == 200 else {}

                async def both() -> bool:
                    return sorted(await started()) == ["node-1", "node-2"]

                await _until(both, 30, "both nodes in the registry")
                node = Client(http, f"http://127.0.0.1:{port + 1}")  # only what the door asks of it
                assert (await node.call("GET", "/healthz"))[0] == 200
                status, problem = await node.call("GET", "/api/me", token=admin)
                assert status == 404 and "media node" in problem["detail"], problem
                # RTMP: the door names the nodes' shared port; FFmpeg goes live through it.
                stream_key = await door.broadcaster("caster")
                _, login = await door.call("POST", "/api/auth/login", {"username": "caster", "password": "correct horse"})
                _, shown = await door.call("GET", "/api/me/stream-key", token=login["access_token"])
                assert shown["rtmp_url"] == f"rtmp://127.0.0.1:{rtmp}/live", shown
                encoder = asyncio.ensure_future(ffmpeg(f"{shown['rtmp_url']}/{stream_key}", seconds=4.0, bframes=0))

                async def live() -> bool:
                    assert not encoder.done(), encoder.result()[1][-2000:]
                    return bool((await door.call("GET", "/api/channels/caster"))[1]["is_live"])

                await _until(live, 20, "the RTMP stream live")
                code, encoded = await encoder
                assert code == 0, encoded[-2000:]
                first = await started()
                processes = children(supervisor.pid)
                assert set(processes) == {"door", "node-1", "node-2", "worker"}, processes
                os.kill(processes["node-2"], signal.SIGKILL)

                async def restarted() -> bool:
                    now = await started()
                    return "node-2" in now and now["node-2"] != first["node-2"]

                await _until(restarted, 40, "the node started again (a new process in the registry)")
                processes = children(supervisor.pid)
        finally:
            supervisor.send_signal(signal.SIGTERM)
            try:
                code = supervisor.wait(timeout=40)
            except subprocess.TimeoutExpired:
                supervisor.kill()
                raise
        assert code == 0, log.read_text()[-3000:]
        for pid in processes.values():
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        text = log.read_text()
        assert "node-2 exited with -9" in text and "Traceback" not in text, text[-3000:]


async def _until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        await asyncio.sleep(0.25)


def _three_free_ports() -> int:
    """A port with the two after it free too (the door's and the nodes')."""
    import socket

    for _ in range(50):
        base = free_port()
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", base + 1))
                b.bind(("127.0.0.1", base + 2))
            return base
        except OSError:
            continue
    raise AssertionError("no three free ports in a row")
