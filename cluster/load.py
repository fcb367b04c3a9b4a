"""Rates measured between two readings: a process's CPU share, a counter's rate."""

from __future__ import annotations

import time
from collections.abc import Callable


class RateMeter:
    """The rate of a counter that only goes up, per second of `clock`, since the last reading."""

    def __init__(self, counter: Callable[[], float], clock: Callable[[], float] = time.monotonic) -> None:
        self._counter = counter
        self._clock = clock
        self._last_value = counter()
        self._last_at = clock()

    def read(self) -> float:
        value, at = self._counter(), self._clock()
        elapsed = at - self._last_at
        rate = (value - self._last_value) / elapsed if elapsed > 0 else 0.0
        self._last_value, self._last_at = value, at
        return max(rate, 0.0)


def cpu_meter() -> RateMeter:
    """This process's CPU seconds per wall second: 1.0 is one core fully used."""
    return RateMeter(time.process_time)
