"""Shared fixtures: the app on a real loopback server, on SQLite and on PostgreSQL.

PostgreSQL is the machine's server (TESTING.md); each test session makes a database of its own and
drops it afterwards. TALLY_TEST_POSTGRES overrides the admin URL; "off" skips the PostgreSQL runs.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).parent))

from signaling.app import SERVICES, create_app  # noqa: E402
from signaling.db.database import Database  # noqa: E402
from signaling.db.models import Base  # noqa: E402
from signaling.migrations.runner import upgrade  # noqa: E402
from pg_databases import PG_ADMIN, fresh_database  # noqa: E402
from support import Api, FakeClock, make_settings  # noqa: E402

@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    if PG_ADMIN == "off":
        pytest.skip("PostgreSQL runs are off (TALLY_TEST_POSTGRES=off)")
    with fresh_database("tally_test") as url:

        async def migrate() -> None:
            db = Database(url)
            await upgrade(db.engine)
            await db.close()

        asyncio.run(migrate())
        yield url


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


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


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
