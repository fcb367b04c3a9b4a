"""The migrations build exactly the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from signaling.db.database import Database
from signaling.db.models import Base
from signaling.migrations.runner import alembic_config, pending, upgrade


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


async def _downgrade(db: Database, revision: str) -> None:
    def run(connection: Any) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with db.engine.begin() as connection:
        await connection.run_sync(run)


async def test_sealed_secrets_cannot_be_downgraded_into_code_that_would_misread_them(database_url: str) -> None:
    db = Database(database_url)
    try:
        await upgrade(db.engine)
        insert = "INSERT INTO site_secrets (name, value, created_at) VALUES (:name, :value, CURRENT_TIMESTAMP)"
        async with db.engine.begin() as connection:
            await connection.execute(sa.text(insert), {"name": "sealing-check", "value": "sealed:x"})
        await _downgrade(db, "0009")  # the check row alone: nothing old code reads is sealed
        await upgrade(db.engine)
        async with db.engine.begin() as connection:
            await connection.execute(sa.text(insert), {"name": "vapid-private-pem", "value": "sealed:y"})
        with pytest.raises(RuntimeError, match="site_secrets.value holds 1 sealed value"):
            await _downgrade(db, "0009")
        assert not await pending(db.engine)  # refused as a whole: still at the newest revision
    finally:
        await db.close()
