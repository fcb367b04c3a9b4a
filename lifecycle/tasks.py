"""Background tasks with an owner, and a stop that cannot hang.

Every long-running task here has an owner that starts it once and stops it on close. A plain
"cancel, then wait for the task" waits for ever on a task that does not end when cancelled: a store
client that answers the cancellation with an error of its own, caught by a loop that takes any error
for "the store is down, try again", keeps the loop going, and the process's shutdown with it until
SIGKILL (CI runs N and U, in the announcer and the stream reaper). So:

- `stop` cancels and waits a bounded time, then goes on without what did not stop, saying so;
- `Periodic` (and every loop written by hand) also checks a closed flag each turn, or `cancelling()`
  where it catches errors and tries again, so a loop that swallowed its cancellation still ends at its
  next turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

STOP_WITHIN = 5.0  # seconds a task has to end once cancelled, by default


def cancelling() -> bool:
    """Has the running task been asked to stop? True from its cancellation on, even after the
    CancelledError was caught or turned into another error (Python 3.11's count of cancel requests)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _take_error(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def stop(tasks: Iterable[asyncio.Task[Any] | None], what: str, within: float = STOP_WITHIN) -> bool:
    """Cancel `tasks` (None is skipped) and wait until they end, `within` seconds at most; whether all
    of them ended. Their errors are taken, now or whenever they end (nothing is logged as never
    retrieved)."""
    given = [t for t in tasks if t is not None]
    for task in given:
        task.cancel()  # (a no-op on one that ended)
        task.add_done_callback(_take_error)
    if not given:
        return True
    _, pending = await asyncio.wait(given, timeout=within)
    if pending:
        names = ", ".join(sorted({t.get_name() for t in pending}))
        log.warning("%s: %d task(s) did not stop within %g s when asked (%s); going on without them",
                    what, len(pending), within, names)
        return False
    return True


class Periodic:
    """`step` every `every` seconds in a task of its own: started once, stopped by `close`. A step that
    fails is logged and the next one runs (one bad turn must not end the work)."""

    def __init__(self, name: str, every: float, step: Callable[[], Awaitable[object]],
                 within: float = STOP_WITHIN) -> None:
        self.name = name
        self._every = every
        self._step = step
        self._within = within
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def _run(self) -> None:
        while not self._closed and not cancelling():
            await asyncio.sleep(self._every)
            if self._closed:
                break
            try:
                await self._step()
            except Exception:
                log.exception("%s: a turn failed", self.name)

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def close(self) -> None:
        self._closed = True
        await stop([self._task], self.name, self._within)
        self._task = None
