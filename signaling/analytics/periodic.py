"""A step run every few seconds in a task of its own, owned by whoever made it: started once, cancelled
by `close`. A step that fails is logged and the next one runs (one bad turn must not end the work)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, name: str, every: float, step: Callable[[], Awaitable[object]]) -> None:
        self.name = name
        self._every = every
        self._step = step
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            try:
                await self._step()
            except Exception:
                log.exception("%s: a turn failed", self.name)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
