"""Shared fixtures: the app on a real loopback server, on SQLite and on PostgreSQL.

PostgreSQL is the machine's server (TESTING.md); each test session makes a database of its own and
drops it afterwards. TALLY_TEST_POSTGRES overrides the admin URL; "off" skips the PostgreSQL runs.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).parent))

from signaling.app import SERVICES, Services, create_app  # noqa: E402
from signaling.db.database import Database  # noqa: E402
from signaling.db.models import Base  # noqa: E402
from signaling.migrations.runner import upgrade  # noqa: E402
from signaling.settings import Settings  # noqa: E402

PG_ADMIN = os.environ.get("TALLY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
JWT_SECRET = "test-secret-" + "x" * 40


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    if PG_ADMIN == "off":
        pytest.skip("PostgreSQL runs are off (TALLY_TEST_POSTGRES=off)")
    name = f"tally_test_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(PG_ADMIN)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{base}/{name}"

    async def migrate() -> None:
        db = Database(url)
        await upgrade(db.engine)
        await db.close()

    asyncio.run(migrate())
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'tally.db'}"
        return
    url: str = request.getfixturevalue("postgres_url")

    async def empty() -> None:
        db = Database(url)
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        async with db.session() as session:
            await session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        await db.close()

    asyncio.run(empty())
    yield url


class FakeClock:
    """Time that moves only when a test moves it."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        data_dir=tmp_path / "var",
        database_url=database_url,
        jwt_secret=JWT_SECRET,
        argon2_time_cost=1,
        argon2_memory_cost=8,
        public_url="http://tally.test",
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


@pytest.fixture
def app_factory(tmp_path: Path, database_url: str, clock: FakeClock) -> Callable[..., web.Application]:
    def build(**overrides: Any) -> web.Application:
        url = overrides.pop("database_url", database_url)
        return create_app(make_settings(tmp_path, url, **overrides), clock=clock)

    return build


@pytest.fixture
async def api(app_factory: Callable[..., web.Application], clock: FakeClock) -> AsyncIterator[Api]:
    app = app_factory()
    async with TestClient(TestServer(app)) as client:
        # The first account of an installation becomes admin; tests that want one ask for it.
        yield Api(client, app[SERVICES], clock)
