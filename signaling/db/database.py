"""The engine and sessions for a database URL (SQLite embedded, PostgreSQL distributed)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Executable, Row, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")  # what a row held before (a secret before sealing) is zeroed on disk
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


class Database:
    """Owns the engine; hands out sessions that commit on success and roll back on error."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session, session.begin():
            yield session

    async def write(self, statement: Executable) -> list[Row[Any]]:
        """Run one statement in a transaction of its own, committed as it returns; its rows (RETURNING).

        In a session a write holds SQLite's one write lock from the statement to the commit, across
        turns of the event loop, which a busy node makes long; every other writer waits that long too.
        Here the lock is held only while the statement runs.
        """
        async with self.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            result = await autocommit.execute(statement)
            return list(result.all()) if result.returns_rows else []

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()


async def insert_new(session: AsyncSession, model: type[Any], values: dict[str, Any]) -> bool:
    """INSERT the row unless one with the same key (any unique constraint) exists; True when it was
    added. One statement in the session's transaction (a savepoint would commit early on SQLite, whose
    driver opens transactions itself)."""
    from sqlalchemy.dialects import postgresql, sqlite

    if session.get_bind().dialect.name == "postgresql":
        statement: Executable = postgresql.insert(model).values(**values).on_conflict_do_nothing()
    else:
        statement = sqlite.insert(model).values(**values).on_conflict_do_nothing()
    result = await session.execute(statement)
    return bool(result.rowcount)  # type: ignore[attr-defined]


def upsert(session: AsyncSession, model: type[Any], update: set[str] | frozenset[str],
           rules: Callable[[Any], dict[str, Any]] | None = None) -> Executable:
    """An INSERT of rows (given as its parameters: one or many) that, where a row with the same primary
    key exists, sets only the `update` columns to the new values (or as `rules(excluded)` says, for
    the columns it names). One statement, on PostgreSQL and SQLite alike."""
    from sqlalchemy.dialects import postgresql, sqlite

    insert = (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(model)
    ruled = rules(insert.excluded) if rules is not None else {}
    return insert.on_conflict_do_update(
        index_elements=model.__table__.primary_key.columns,
        set_={c: ruled[c] if c in ruled else insert.excluded[c] for c in sorted(update)})
