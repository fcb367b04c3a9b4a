"""Packets a publisher's stream is missing, and when to NACK them again or give up.

Gaps are NACKed upstream (RFC 4585 generic NACK) every `retry_interval`, each at most `max_tries`
times and only while younger than `max_age`; a gap that cannot be repaired in time means the picture is
broken until the next keyframe, so the tracker says a keyframe is needed. A jump too large to be loss
(a publisher restart) is not NACKed at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sfu.seqnum import SeqUnwrapper, seq_diff


@dataclass(slots=True)
class _Missing:
    since: float
    last_nack: float
    tries: int


class LossTracker:
    def __init__(
        self,
        clock: Callable[[], float],
        retry_interval: float = 0.04,
        max_tries: int = 8,
        max_age: float = 0.6,
        max_gap: int = 512,
    ) -> None:
        self._clock = clock
        self.retry_interval = retry_interval
        self.max_tries = max_tries
        self.max_age = max_age
        self.max_gap = max_gap
        self._unwrap = SeqUnwrapper()
        self._missing: dict[int, _Missing] = {}
        self._keyframe_needed = False
        self.lost = 0
        self.repaired = 0
        self.gaps = 0  # packets found missing (then repaired, lost, or still awaited)

    def received(self, seq: int) -> None:
        previous = self._unwrap.highest
        extended = self._unwrap.unwrap(seq)
        if previous < 0 or extended <= previous:
            if self._missing.pop(extended, None) is not None:
                self.repaired += 1
            return
        gap = extended - previous - 1
        if gap == 0:
            return
        if gap > self.max_gap:
            self._missing.clear()
            self._keyframe_needed = True
            return
        now = self._clock()
        self.gaps += gap
        for missing in range(previous + 1, extended):
            self._missing[missing] = _Missing(since=now, last_nack=float("-inf"), tries=0)

    def poll(self) -> tuple[list[int], bool]:
        """(16-bit sequence numbers to NACK now, whether a keyframe must be requested)."""
        now = self._clock()
        nack: list[int] = []
        for extended, state in list(self._missing.items()):
            if state.tries >= self.max_tries or now - state.since > self.max_age:
                del self._missing[extended]
                self.lost += 1
                self._keyframe_needed = True
            elif now - state.last_nack >= self.retry_interval:
                state.last_nack = now
                state.tries += 1
                nack.append(extended & 0xFFFF)
        needed, self._keyframe_needed = self._keyframe_needed, False
        return nack, needed

    def keyframe_arrived(self, seq: int) -> None:
        """Gaps before the keyframe starting at `seq` no longer matter to anyone; gaps inside it still do."""
        highest = self._unwrap.highest
        start = highest + seq_diff(seq, highest & 0xFFFF)
        for extended in [e for e in self._missing if e < start]:
            del self._missing[extended]

    @property
    def missing(self) -> int:
        return len(self._missing)
