"""Times the steps of a process's shutdown, so a slow or stuck exit says which step held it.

Each step is marked when it ends; a step still running after `slow` seconds is logged while it runs
(a step that never returns would otherwise leave no trace), and the whole shutdown is summed up in
one line at the end, naming the steps that took noticeable time.
"""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger(__name__)

NOTICEABLE = 0.05  # seconds; shorter steps are left out of the summary


class ShutdownSteps:
    def __init__(self, slow: float = 2.0) -> None:
        self._slow = slow
        self._started: float | None = None
        self._last = 0.0
        self._current = ""
        self._took: list[tuple[str, float]] = []
        self._watch: asyncio.TimerHandle | None = None

    def begin(self, step: str) -> None:
        """The shutdown starts (idempotent); `step` is what it does first."""
        if self._started is None:
            self._started = self._last = time.monotonic()
            self._current = step
            self._arm()

    def next(self, done: str | None = None, then: str = "") -> None:
        """The current step ended (named `done` if given); `then` is the one that starts now."""
        self.begin(then)
        now = time.monotonic()
        self._took.append((done or self._current, now - self._last))
        self._last, self._current = now, then
        self._arm()

    def finish(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._started is None:
            return
        total = time.monotonic() - self._started
        slow = ", ".join(f"{name} {took:.2f} s" for name, took in self._took if took >= NOTICEABLE)
        log.info("stopped in %.2f s%s", total, f" ({slow})" if slow else "")

    def _arm(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self._watch = asyncio.get_running_loop().call_later(self._slow, self._still, self._current, self._last)

    def _still(self, step: str, since: float) -> None:
        log.warning("shutdown: still in step %r after %.1f s", step, time.monotonic() - since)
        self._watch = asyncio.get_running_loop().call_later(self._slow, self._still, step, since)
