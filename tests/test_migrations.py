"""The migrations build exactly the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from signaling.db.database import Database
from signaling.db.models import Base
from signaling.migrations.runner import pending, upgrade


async def test_migrations_match_the_models(database_url: str) -> None:
    db = Database(database_url)
    try:
        await upgrade(db.engine)
        assert not await pending(db.engine)

        def differences(connection: Any) -> list[Any]:
            return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))

        async with db.engine.connect() as connection:
            diff = await connection.run_sync(differences)
        assert diff == []
        await upgrade(db.engine)  # a second run is a no-op
    finally:
        await db.close()
