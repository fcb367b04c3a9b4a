"""A server killed with SIGKILL while recording: the spool on disk plays up to its last fragment, and
the restarted server finalizes it, uploads it and lists it, without anyone asking."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from media_probe import decode_errors, probe
from support import free_port, wait_ready
from test_chat_redis import account
from webrtc_peer import Peer

REPO = Path(__file__).resolve().parents[1]


class Node:
    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = tmp_path / "data"
        self.env = {**os.environ, "DATA_DIR": str(self.data), "HOST": "127.0.0.1", "PORT": str(self.port),
                    "PUBLIC_URL": "", "NODE_ID": "crashy", "ARGON2_TIME_COST": "1", "ARGON2_MEMORY_COST": "8",
                    "WEBRTC_HOST_ADDRESSES": "127.0.0.1", "DATABASE_URL": "", "BUS_URL": "memory://",
                    "STORAGE_URL": "", "RECORDING_FRAGMENT_SECONDS": "1.0"}
        self.log = tmp_path / "node.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "signaling.cli", "serve"], cwd=REPO, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        wait_ready(self.url, self.process, self.log)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            assert self.process.wait(timeout=30) == 0


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    n.start()
    try:
        yield n
    finally:
        n.stop()


async def test_a_recording_survives_sigkill_and_is_finalized_after_restart(node: Node, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        token = await account(http, node.url, "crashy")
        auth = {"Authorization": f"Bearer {token}"}
        async with http.patch(f"{node.url}/api/channels/crashy", json={"record_streams": True}, headers=auth) as r:
            assert r.status == 200
        async with http.get(f"{node.url}/api/me/stream-key", headers=auth) as r:
            key = (await r.json())["key"]
        peer = Peer.publisher("h264", audio=True)
        async with http.post(f"{node.url}/whip/crashy", data=(await peer.offer()).encode(),
                             headers={"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"}) as r:
            assert r.status == 201, await r.text()
            await peer.answer(await r.text())
        started = time.monotonic()
        await asyncio.sleep(7.0)
        assert node.process is not None
        node.process.kill()  # SIGKILL: no shutdown code runs
        node.process.wait()
        published = time.monotonic() - started
        await peer.close()

        spools = list((node.data / "spool").glob("*/spool.mp4"))
        assert len(spools) == 1, spools
        left = probe(spools[0])  # the crashed spool itself plays up to its last complete fragment
        assert left.codec("video") == "h264" and left.duration > published - 3.0, (left.duration, published)

        node.start()  # the same data directory: it finds the unfinished recording by itself
        deadline = time.monotonic() + 30
        while True:
            async with http.get(f"{node.url}/api/channels/crashy/recordings") as r:
                items: list[dict[str, Any]] = (await r.json())["items"]
            if items and items[0]["state"] == "ready":
                break
            assert time.monotonic() < deadline, items
            await asyncio.sleep(0.3)
        ready = items[0]
        assert len(items) == 1 and ready["ended_at"] is not None
        target = tmp_path / "recovered.mp4"
        async with http.get(ready["playback_url"]) as r:
            assert r.status == 200
            target.write_bytes(await r.read())
        info = probe(target)
        assert info.codec("video") == "h264" and info.codec("audio") == "opus"
        # At most the last fragment (1 s) and the wait for the first keyframe are missing.
        assert published - 3.0 < info.duration <= published + 0.2, (info.duration, published)
        assert decode_errors(target) == ""
        assert not spools[0].exists()  # the spool is gone once the recording is safe in storage
