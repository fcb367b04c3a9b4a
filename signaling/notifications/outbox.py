"""The outbox: work an event leaves behind, written in the event's own transaction, so the event and
the promise to tell people of it commit (or vanish) together.

Workers take due jobs of the kinds they have room for with a lease: one UPDATE … RETURNING claims
them (on PostgreSQL through `FOR UPDATE SKIP LOCKED`, so any number of workers take disjoint jobs;
SQLite has one writer at a time). A worker renews the leases of the jobs it is running. A job done is
deleted; a job that failed is put back with a later `due_at` (backoff); a job whose worker died is
taken again when its lease runs out, and that counts as an attempt (a job that kills its workers ends
as failed). Jobs are therefore done at least once: handlers make a second run harmless where it
matters (the go-live fan-out marks the channel first). A job may have a `key` naming what it is about:
`enqueue(..., unique=True)` leaves no second job with the same key waiting, and `drop` removes them.
Jobs failed for good are kept FAILED_KEPT for an operator to see, then removed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from signaling.db.database import Database
from signaling.db.models import OutboxJob

MAX_ATTEMPTS = 8  # then the job is kept as failed, for an operator to see
FAILED_KEPT = timedelta(days=7)
BACKOFF = 10.0  # seconds before the first retry; doubling after that...
MAX_BACKOFF = 3600.0  # ...to at most an hour


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int  # earlier attempts (0 on the first run)


def enqueue(session: AsyncSession, kind: str, payload: dict[str, Any], due_at: datetime, key: str | None = None) -> None:
    """Leave a job in the transaction of `session`: it exists if and only if that transaction commits."""
    session.add(OutboxJob(kind=kind, key=key, payload=payload, due_at=due_at, attempts=0, locked_by="", last_error=""))


async def waiting(session: AsyncSession, key: str) -> bool:
    """Is a job about `key` waiting (not started, not failed)?"""
    found = await session.scalar(select(OutboxJob.id).where(OutboxJob.key == key, OutboxJob.failed_at.is_(None),
                                                            OutboxJob.locked_until.is_(None)).limit(1))
    return found is not None


async def drop(session: AsyncSession, key: str) -> None:
    """Remove the waiting jobs about `key` (what they were for is gone), in the caller's transaction."""
    await session.execute(delete(OutboxJob).where(OutboxJob.key == key, OutboxJob.locked_until.is_(None)))


def backoff(attempts: int, jitter: Callable[[], float] = random.random) -> float:
    """Seconds before the retry that follows `attempts` failures (with ±20 % jitter, so a receiver
    that was down is not hit by every retry at the same moment)."""
    return float(min(MAX_BACKOFF, BACKOFF * 2.0 ** max(0, attempts - 1)) * (0.8 + 0.4 * jitter()))


class Outbox:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._postgres = db.engine.dialect.name == "postgresql"

    async def add(self, kind: str, payload: dict[str, Any], due_at: datetime) -> None:
        """A job of its own (not tied to another write)."""
        async with self._db.session() as session:
            enqueue(session, kind, payload, due_at)

    async def claim(self, worker: str, now: datetime, room: dict[str, int], lease: float) -> list[Job]:
        """Lease due jobs to `worker` for `lease` seconds, oldest due first: at most `room[kind]` of each
        kind (jobs of other kinds are left alone). Taking a job whose lease ran out counts as an attempt."""
        kinds = [kind for kind, free in room.items() if free > 0]
        if not kinds:
            return []
        due = (select(OutboxJob.id)
               .where(OutboxJob.kind.in_(kinds), OutboxJob.failed_at.is_(None), OutboxJob.due_at <= now,
                      (OutboxJob.locked_until.is_(None)) | (OutboxJob.locked_until <= now))
               .order_by(OutboxJob.due_at, OutboxJob.id).limit(sum(room[k] for k in kinds)))
        if self._postgres:
            due = due.with_for_update(skip_locked=True)
        statement = (update(OutboxJob).where(OutboxJob.id.in_(due.scalar_subquery()))
                     .values(locked_until=now + timedelta(seconds=lease), locked_by=worker[:64],
                             attempts=OutboxJob.attempts + case((OutboxJob.locked_until.is_not(None), 1), else_=0))
                     .returning(OutboxJob.id, OutboxJob.kind, OutboxJob.payload, OutboxJob.attempts))
        rows = await self._db.write(statement)
        jobs = sorted((Job(int(row.id), str(row.kind), dict(row.payload or {}), int(row.attempts)) for row in rows),
                      key=lambda job: job.id)
        kept: list[Job] = []
        extra: list[int] = []
        taken = dict.fromkeys(kinds, 0)
        for job in jobs:  # more of one kind than it has room for: let the rest go at once
            if taken[job.kind] < room[job.kind]:
                taken[job.kind] += 1
                kept.append(job)
            else:
                extra.append(job.id)
        if extra:
            await self._db.write(update(OutboxJob).where(OutboxJob.id.in_(extra), OutboxJob.locked_by == worker[:64])
                                 .values(locked_until=None))
        return kept

    async def renew(self, worker: str, ids: list[int], now: datetime, lease: float) -> None:
        """The worker still runs these: keep them leased to it."""
        if ids:
            await self._db.write(update(OutboxJob).where(OutboxJob.id.in_(ids), OutboxJob.locked_by == worker[:64])
                                 .values(locked_until=now + timedelta(seconds=lease)))

    async def tidy(self, now: datetime) -> int:
        """Remove jobs failed for good more than FAILED_KEPT ago; how many failed jobs are left."""
        await self._db.write(delete(OutboxJob).where(OutboxJob.failed_at.is_not(None), OutboxJob.failed_at < now - FAILED_KEPT))
        return (await self.counts())[1]

    async def done(self, job: Job, worker: str) -> None:
        await self._db.write(delete(OutboxJob).where(OutboxJob.id == job.id, OutboxJob.locked_by == worker[:64]))

    async def failed(self, job: Job, worker: str, error: str, now: datetime, retry: bool = True) -> bool:
        """Put the job back for a later try, or (after MAX_ATTEMPTS, or when `retry` is false) keep it as
        failed; True when it will be tried again."""
        attempts = job.attempts + 1
        again = retry and attempts < MAX_ATTEMPTS
        values: dict[str, Any] = {"attempts": attempts, "last_error": error[:300], "locked_until": None}
        if again:
            values["due_at"] = now + timedelta(seconds=backoff(attempts))
        else:
            values["failed_at"] = now
        await self._db.write(update(OutboxJob).where(OutboxJob.id == job.id, OutboxJob.locked_by == worker[:64])
                             .values(**values))
        return again

    async def counts(self) -> tuple[int, int]:
        """(jobs waiting, jobs failed for good)."""
        async with self._db.session() as session:
            rows = (await session.execute(select(OutboxJob.failed_at.is_(None), func.count()).group_by(
                OutboxJob.failed_at.is_(None)))).all()
        waiting = sum(int(n) for pending, n in rows if pending)
        return waiting, sum(int(n) for pending, n in rows if not pending)


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
