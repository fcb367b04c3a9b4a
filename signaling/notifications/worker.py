"""The notification worker: takes due jobs from the outbox and runs each with the handler for its kind.

One per process that runs it: inside `tally serve` in the embedded mode, or as `tally worker`
processes (any number) in the distributed mode. Each kind has a cap on the jobs of that kind running
at once (so a slow mail server does not hold the webhooks), and the worker takes no more jobs than it
has room for. A handler that raises `Retry` (or anything else) has its job tried again later with
backoff; `GiveUp` keeps the job as failed at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from lifecycle.tasks import stop
from signaling.notifications.outbox import MAX_ATTEMPTS, Job, Outbox, utc

log = logging.getLogger(__name__)

Handler = Callable[[Job], Awaitable[None]]

LEASE = 120.0  # seconds a worker holds a job; one that died lets it go after this...
RENEW = 30.0  # ...and one that lives renews the leases of the jobs it runs this often
POLL = 1.0  # seconds between looks at the outbox when there was nothing to do


class Retry(Exception):
    """The job could not be done now (a receiver is down, answered 5xx): try again later."""


class GiveUp(Exception):
    """The job cannot be done (a receiver refused it for good): keep it as failed, do not retry."""


class Worker:
    def __init__(self, outbox: Outbox, handlers: Mapping[str, Handler], caps: Mapping[str, int] | None = None,
                 clock: Callable[[], float] = time.time, poll: float = POLL, name: str = "",
                 chores: tuple[tuple[float, Callable[[], Awaitable[Any]]], ...] = ()) -> None:
        self._chores = chores  # (every so many seconds, do this): upkeep the worker owns
        self._outbox = outbox
        self._handlers = handlers
        self._caps = {kind: max(1, (caps or {}).get(kind, 4)) for kind in handlers}
        self._running: dict[str, int] = dict.fromkeys(handlers, 0)
        self._clock = clock
        self._poll = poll
        # Unique however it is named (two processes with one NODE_ID must not pass for each other).
        self.name = f"{name or socket.gethostname() + ':' + str(os.getpid())}/{secrets.token_hex(4)}"[-64:]
        self._held: dict[int, Job] = {}  # jobs running here, whose leases are renewed
        self._task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._closed = False
        self.done = 0
        self.retried = 0
        self.failed = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notification-worker")
        self._chores = (*self._chores, (RENEW, self._renew))
        for every, chore in self._chores:
            task = asyncio.create_task(self._every(every, chore), name="notification-chore")
            self._jobs.add(task)
            task.add_done_callback(self._jobs.discard)

    async def _every(self, seconds: float, chore: Callable[[], Awaitable[Any]]) -> None:
        while not self._closed:
            await asyncio.sleep(seconds)
            try:
                await chore()
            except Exception as exc:  # noqa: BLE001 - upkeep: the next round tries again
                log.warning("notification upkeep failed: %s", exc)

    def wake(self) -> None:
        """Look at the outbox now (a job was just added in this process)."""
        self._wake.set()

    async def close(self) -> None:
        self._closed = True
        await stop([self._task], "the notification worker")  # first: it starts no job after this
        self._task = None
        # Jobs cut short here keep their leases until these run out; another worker then retries them.
        await stop(list(self._jobs), "the notification jobs")

    def _room(self) -> dict[str, int]:
        return {kind: self._caps[kind] - self._running[kind] for kind in self._caps}

    async def _renew(self) -> None:
        await self._outbox.renew(self.name, list(self._held), utc(self._clock()), LEASE)

    async def run_due(self) -> int:
        """Take the jobs due now that there is room for, run them to the end; how many were taken."""
        jobs = await self._outbox.claim(self.name, utc(self._clock()), self._room(), LEASE)
        tasks = [self._spawn(job) for job in jobs]
        await asyncio.gather(*tasks, return_exceptions=True)
        return len(jobs)

    async def _run(self) -> None:
        while not self._closed:
            try:
                taken = await self._take()
            except Exception as exc:  # noqa: BLE001 - the database is down: try again later
                log.warning("the notification worker could not read the outbox: %s", exc)
                taken = 0
            if not taken:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._poll)
                except TimeoutError:
                    pass

    async def _take(self) -> int:
        room = self._room()
        if not any(free > 0 for free in room.values()):
            await asyncio.sleep(0.05)  # busy: let running jobs finish
            return 0
        jobs = await self._outbox.claim(self.name, utc(self._clock()), room, LEASE)
        if self._closed:
            return 0  # closing: their leases run out, and another worker takes them
        for job in jobs:
            self._spawn(job)
        return len(jobs)

    def _spawn(self, job: Job) -> asyncio.Task[None]:
        kind = job.kind if job.kind in self._running else ""
        if kind:
            self._running[kind] += 1
        task = asyncio.create_task(self._do(job), name=f"job-{job.kind}-{job.id}")
        self._jobs.add(task)
        self._held[job.id] = job

        def finished(_: Any) -> None:
            self._jobs.discard(task)
            self._held.pop(job.id, None)
            if kind:
                self._running[kind] -= 1

        task.add_done_callback(finished)
        return task

    async def _do(self, job: Job) -> None:
        handler = self._handlers.get(job.kind)
        try:
            if handler is None:
                raise GiveUp(f"no handler for jobs of kind {job.kind!r}")
            if job.attempts >= MAX_ATTEMPTS:  # its workers kept dying on it
                raise GiveUp(f"its lease ran out {job.attempts} times")
            await handler(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is the job's, never the worker's
            retry = not isinstance(exc, GiveUp)
            error = str(exc) or type(exc).__name__
            if not isinstance(exc, Retry | GiveUp):
                log.exception("job %s (%s) failed", job.id, job.kind)
            try:
                again = await self._outbox.failed(job, self.name, error, utc(self._clock()), retry)
            except Exception as store:  # noqa: BLE001 - the lease runs out and the job is taken again
                log.warning("could not put job %s back: %s", job.id, store)
                return
            if again:
                self.retried += 1
            else:
                self.failed += 1
                log.warning("job %s (%s) failed for good after %d attempts: %s", job.id, job.kind, job.attempts + 1, error)
            return
        try:
            await self._outbox.done(job, self.name)
            self.done += 1
            self._wake.set()  # it may have left jobs of its own (a fan-out's batches): look now
        except Exception as exc:  # noqa: BLE001 - it is done; at worst it is done again after its lease
            log.warning("could not mark job %s done: %s", job.id, exc)
