"""Rates measured between two readings: a process's CPU share, a counter's rate."""

from __future__ import annotations

import time
from collections.abc import Callable


class RateMeter:
    """The rate of a counter that only goes up, per second of `clock`, since the last reading. A reading
    sooner than `shortest` after the last one gives the last rate again (a rate over a few milliseconds
    is noise)."""

    def __init__(self, counter: Callable[[], float], clock: Callable[[], float] = time.monotonic,
                 shortest: float = 0.5) -> None:
        self._counter = counter
        self._clock = clock
        self._shortest = shortest
        self._last_value = counter()
        self._last_at = clock()
        self._rate = 0.0

    def read(self) -> float:
        at = self._clock()
        elapsed = at - self._last_at
        if elapsed < self._shortest:
            return self._rate
        value = self._counter()
        self._rate = max((value - self._last_value) / elapsed, 0.0)
        self._last_value, self._last_at = value, at
        return self._rate


def cpu_meter() -> RateMeter:
    """This process's CPU seconds per wall second, every thread: 1.0 is one core fully used."""
    return RateMeter(time.process_time)


def thread_cpu_meter() -> RateMeter:
    """The CPU share of the thread that reads it (read it on the event loop's thread: the loop's load)."""
    return RateMeter(time.thread_time)


def usable_cores() -> int:
    import os

    return len(os.sched_getaffinity(0))
