"""`tally serve` as a subprocess on loopback, for tests that need the real process (its own event loop,
log and memory, and a clean SIGTERM) rather than an app inside the test's loop."""

from __future__ import annotations

import os
import secrets
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import SECRETS_KEYS, free_port, wait_ready

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ServerProcess:
    url: str
    log: Path
    process: subprocess.Popen[bytes]
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: the process dies as in a crash, with no chance to clean up."""
        self.killed = True
        self.process.kill()
        self.process.wait()

    def rss_kib(self) -> int:
        """Resident memory of the server process."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def server_env(data_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment of a server on a fresh data directory: test-friendly settings, `settings` on top."""
    return {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "JWT_SECRET": secrets.token_hex(32),
        "SECRETS_KEYS": SECRETS_KEYS,
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_COST": "8",
        "RATE_LOGIN_PER_MINUTE": "1000",
        "RATE_REGISTER_PER_HOUR": "1000",  # every sign-up in a test comes from 127.0.0.1
        "PUBLIC_URL": "",
        "DATABASE_URL": "",
        "BUS_URL": "memory://",
        "WEBRTC_HOST_ADDRESSES": "127.0.0.1",  # aioice skips loopback unless told (TESTING.md)
        "PUBLISHER_TIMEOUT": "3",
        "RTMP_PORT": "0",  # servers that take RTMP are given a free port
        **settings,
    }


def tally(*args: str) -> list[str]:
    """The command line of `tally <args>` from this checkout."""
    return [sys.executable, "-m", "signaling.cli", *args]


@contextmanager
def serve(data_dir: Path, command: tuple[str, ...] = ("serve",), host: str = "127.0.0.1",
          prefix: tuple[str, ...] = (), **settings: str) -> Iterator[ServerProcess]:
    """Run `tally <command>` (the server) on a fresh data directory with test-friendly settings (and
    `settings` on top), listening on `host`, started under `prefix` (`ip netns exec <ns>`: on another
    "host"); stop it with SIGTERM at the end and fail unless it exits 0 within 10 s."""
    port = free_port()
    env = server_env(data_dir, port, **{"HOST": host, **settings})
    log = data_dir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*prefix, *tally(*command)], cwd=REPO_ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    scheme = "https" if settings.get("TLS_CERT") else "http"  # TLS_CERT: the test's own certificate
    server = ServerProcess(f"{scheme}://{host}:{port}", log, process)
    try:
        wait_ready(server.url, process, log,
                   context=ssl.create_default_context(cafile=settings["TLS_CERT"]) if scheme == "https" else None)
        yield server
    finally:
        if not server.killed:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                pytest.fail(f"the server did not stop within 10 s of SIGTERM:\n{log.read_text()}")
    if not server.killed:
        assert code == 0, f"the server exited with {code} on SIGTERM:\n{log.read_text()}"
