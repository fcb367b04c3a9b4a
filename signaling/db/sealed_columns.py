"""The columns that hold sealed secrets (signaling.auth.sealing), and what is done to all of them at once.

- At start, every process checks that its keys open what the database holds (a row of `site_secrets`
  sealed by the first process, and the newest sealed value of each column): a process given other keys
  stops with why instead of reading garbage. It then seals the values a version before sealing left
  in clear (a migration cannot: it has no key).
- `tally secrets rotate` re-seals every value under the newest key, in one transaction.

Each row is updated only if it still holds what was read, so a process writing meanwhile wins.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from signaling.auth.sealing import PREFIX, Sealer, SecretsKeysError
from signaling.db.database import Database, insert_new
from signaling.db.models import PushSubscription, SiteSecret, Webhook

log = logging.getLogger(__name__)

CHECK_NAME = "sealing-check"  # a site secret that says which keys sealed this database
CHECK_TEXT = "tallylight"
PAGE = 500


@dataclass(frozen=True, slots=True)
class SealedColumn:
    label: str  # as messages name it
    key: InstrumentedAttribute[Any]
    value: InstrumentedAttribute[Any]


COLUMNS = (
    SealedColumn("webhook secrets", Webhook.id, Webhook.secret),
    SealedColumn("push subscriptions' auth secrets", PushSubscription.id, PushSubscription.auth),
    SealedColumn("site secrets", SiteSecret.name, SiteSecret.value),  # the VAPID key, the check
)


class SealedColumns:
    def __init__(self, db: Database, sealer: Sealer) -> None:
        self._db = db
        self._sealer = sealer

    async def start(self) -> None:
        """Check the keys and seal what is in clear; a SecretsKeysError stops the start. A database that
        cannot be reached now is only logged (readiness says so; each value is opened when used)."""
        try:
            await self.check()
            sealed = await self.reseal(everything=False)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("could not check the sealed secrets in the database against SECRETS_KEYS: %s", exc)
            return
        if any(sealed.values()):
            log.info("sealed secrets an earlier version kept in clear: %s",
                     ", ".join(f"{n} {label}" for label, n in sealed.items() if n))

    async def check(self) -> None:
        """Raise SecretsKeysError unless these keys open what the database holds (the first check seals
        the check row)."""
        async with self._db.session() as session:
            await insert_new(session, SiteSecret, {"name": CHECK_NAME, "value": self._sealer.seal(CHECK_TEXT)})
        async with self._db.session() as session:
            found = await session.get(SiteSecret, CHECK_NAME)
            assert found is not None
            try:
                opened = self._sealer.open(found.value)
            except SecretsKeysError:
                raise SecretsKeysError(
                    "the secrets in the database are sealed with a key that SECRETS_KEYS does not hold: give this "
                    "process the keys the others use (a key the embedded mode made is in DATA_DIR/secrets-keys); "
                    "after a new key, keep the old one behind it until `tally secrets rotate` has run") from None
            if opened != CHECK_TEXT:
                raise SecretsKeysError(f"site secret {CHECK_NAME!r} holds something else than Tallylight put there")
            for column in COLUMNS:
                newest = await session.scalar(select(column.value).where(column.value.startswith(PREFIX, autoescape=True))
                                              .order_by(column.key.desc()).limit(1))
                if newest is not None:
                    self._sealer.open(newest, f"one of the database's {column.label}")

    async def reseal(self, everything: bool = True) -> dict[str, int]:
        """Seal every value under the newest key (only those in clear when not `everything`), in one
        transaction; how many of each column. A value no key opens raises SecretsKeysError, changing nothing."""
        counts: dict[str, int] = {}
        async with self._db.session() as session:
            for column in COLUMNS:
                counts[column.label] = await self._reseal_column(session, column, everything)
        return counts

    async def _reseal_column(self, session: AsyncSession, column: SealedColumn, everything: bool) -> int:
        done = 0
        after: Any = None
        while True:
            query = select(column.key, column.value).order_by(column.key).limit(PAGE)
            if not everything:
                query = query.where(~column.value.startswith(PREFIX, autoescape=True))
            if after is not None:
                query = query.where(column.key > after)
            rows = (await session.execute(query)).all()
            for key, value in rows:
                fresh = self._sealer.reseal(value, f"{column.label[:-1]} {key!r}")
                changed = await session.execute(update(column.key.class_).where(column.key == key, column.value == value)
                                                .values({column.value.key: fresh}))
                done += changed.rowcount  # type: ignore[attr-defined]
            if len(rows) < PAGE:
                return done
            after = rows[-1][0]
