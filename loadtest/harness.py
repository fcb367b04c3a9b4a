"""What the benchmarks share: a tiny HTTP client, the real server as a subprocess, CPU readings."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def http(method: str, url: str, body: Any = None, token: str | None = None, raw: bytes | None = None,
         content_type: str = "application/json") -> tuple[int, bytes, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


def user_system(pid: int) -> tuple[float, float]:
    """CPU seconds `pid` has spent in user mode and in the kernel."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / os.sysconf("SC_CLK_TCK"), int(fields[12]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    return sum(user_system(pid))


def metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "_total "):
            return float(line.split()[-1])
    raise KeyError(name)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Running:
    url: str
    pid: int
    data: Path

    def stream_key(self, username: str = "bench") -> str:
        """Sign up `username` (its channel has the same name) and return its stream key."""
        http("POST", self.url + "/api/auth/register",
             {"username": username, "email": f"{username}@example.com", "password": "benchmark pass"})
        _, tokens, _ = http("POST", self.url + "/api/auth/login", {"username": username, "password": "benchmark pass"})
        _, key, _ = http("GET", self.url + "/api/me/stream-key", token=json.loads(tokens)["access_token"])
        return str(json.loads(key)["key"])


def wait_ready(url: str, attempts: int = 300) -> None:
    """Until the service at `url` answers /readyz (30 s at most)."""
    for _ in range(attempts):
        try:
            if urllib.request.urlopen(url + "/readyz", timeout=1).status == 200:
                return
        except OSError:
            time.sleep(0.1)


@contextmanager
def server(**settings: str) -> Iterator[Running]:
    """The real service on the embedded defaults, a fresh data directory and a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    data = Path(tempfile.mkdtemp(prefix="tally-bench-"))
    env = {**os.environ, "DATA_DIR": str(data), "PORT": str(port), "HOST": "127.0.0.1", "DATABASE_URL": "",
           "BUS_URL": "memory://", "WEBRTC_HOST_ADDRESSES": "127.0.0.1", "JWT_SECRET": secrets.token_hex(32),
           "LOG_LEVEL": "WARNING", "PUBLIC_URL": "", "RTMP_PORT": "0", **settings}
    process = subprocess.Popen([sys.executable, "-m", "signaling.cli", "serve"], cwd=REPO, env=env,
                               stdout=open(data / "server.log", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_ready(url)
        yield Running(url, process.pid, data)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
