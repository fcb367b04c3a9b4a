"""A private `redis-server` on a free loopback port: a test can stop and restart it (the machine's shared
Redis is left alone) and sees only its own keys."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from support import free_port


class RedisServer:
    def __init__(self, directory: Path, also_on: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        # Reachable from other "hosts" (`also_on`), it wants a password, as a real deployment's would.
        self._password = secrets.token_hex(16) if also_on else ""
        self._auth = f":{self._password}@" if also_on else ""
        self.url = f"redis://{self._auth}127.0.0.1:{self.port}/0"
        self._bind = ("127.0.0.1", *also_on)
        self._directory = directory
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", *self._bind, "--save", "", "--appendonly", "no",
             *(["--requirepass", self._password] if self._password else []),
             "--dir", str(self._directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, password=self._password or None, socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + 10
        try:
            while True:
                assert self._process.poll() is None, f"redis-server exited at once (port {self.port} taken?)"
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    assert time.monotonic() < deadline, "redis-server did not start"
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        finally:
            client.close()

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


    def url_on(self, address: str) -> str:
        return f"redis://{self._auth}{address}:{self.port}/0"


@contextmanager
def redis_server(directory: Path, also_on: tuple[str, ...] = ()) -> Iterator[RedisServer]:
    server = RedisServer(directory, also_on)
    try:
        server.start()
        yield server
    finally:
        server.stop()
