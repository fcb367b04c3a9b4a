"""Helpers the tests share: a settable clock, settings for a test app, an API client, server readiness."""

from __future__ import annotations

import secrets
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from signaling.app import Services
from signaling.settings import Settings

JWT_SECRET = "test-secret-" + "x" * 40
# The key every test server process seals with: the processes of one test share a database, as a cluster's
# do, and so must share their keys (in-process apps keep the embedded default: a key made under DATA_DIR).
SECRETS_KEYS = "p7xfBrknZapo9BLoapln_ggKequCK_n2Sv5sg-NlNI8="


@contextmanager
def logs_on_failure(*logs: Path, lines: int = 60) -> Iterator[None]:
    """Print the last `lines` of each server log when the block fails: what the servers did then is
    gone with the test's temporary directory once CI is over."""
    try:
        yield
    except BaseException:
        for log in logs:
            text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else ["(no log)"]
            print(f"--- last lines of {log}", *text, sep="\n")
        raise


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30,
               context: ssl.SSLContext | None = None) -> None:
    """Wait until a server subprocess answers /readyz; fail with its log if it exits or never does."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"the server exited early:\n{log.read_text()}"
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2, context=context) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"the server did not become ready:\n{log.read_text()}"
        time.sleep(0.1)


class FakeClock:
    """Time that moves only when a test moves it."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        data_dir=tmp_path / "var",
        database_url=database_url,
        jwt_secret=JWT_SECRET,
        argon2_time_cost=1,
        argon2_memory_cost=8,
        public_url="http://tally.test",
        rtmp_port=0,  # tests that want RTMP pick a free port
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Api:
    """A test client with helpers for the flows most tests need."""

    client: TestClient[Any, Any]
    services: Services
    clock: FakeClock
    _n: int = field(default=0)

    async def call(
        self, method: str, path: str, json: Any = None, token: str | None = None, **kwargs: Any
    ) -> tuple[int, Any, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.client.request(method, path, json=json, headers=headers, **kwargs) as response:
            body: Any = await response.read()
            if response.content_type in ("application/json", "application/problem+json") and body:
                body = await response.json(content_type=None)
            return response.status, body, response.headers

    async def register(self, username: str | None = None, password: str = "correct horse") -> dict[str, Any]:
        if username is None:
            self._n += 1
            username = f"user{self._n}_{secrets.token_hex(2)}"
        status, body, _ = await self.call(
            "POST", "/api/auth/register", {"username": username, "email": f"{username}@example.com", "password": password}
        )
        assert status == 201, body
        return dict(body)

    async def login(self, username: str, password: str = "correct horse") -> dict[str, Any]:
        status, body, _ = await self.call("POST", "/api/auth/login", {"username": username, "password": password})
        assert status == 200, body
        return dict(body)

    async def user(self, role: str | None = None, username: str | None = None) -> tuple[str, str]:
        """A new signed-in user (with `role`, set directly through the service); returns (username, token)."""
        user = await self.register(username)
        if role is not None:
            from signaling.auth.roles import Role

            await self.services.accounts.set_role(user["username"], Role.parse(role))
        return user["username"], (await self.login(user["username"]))["access_token"]
