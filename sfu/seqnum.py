"""16-bit RTP sequence number arithmetic (RFC 3550, appendix A.1)."""

from __future__ import annotations

SEQ_MOD = 1 << 16
HALF = 1 << 15


def seq_diff(a: int, b: int) -> int:
    """a - b as a signed distance in (-32768, 32768]: positive when `a` is newer than `b`."""
    d = (a - b) & 0xFFFF
    return d - SEQ_MOD if d > HALF else d


class SeqUnwrapper:
    """Turns wrapping 16-bit sequence numbers into ever-growing integers (late packets map back)."""

    __slots__ = ("_highest",)

    def __init__(self) -> None:
        self._highest = -1

    @property
    def highest(self) -> int:
        return self._highest

    def unwrap(self, seq: int) -> int:
        if self._highest < 0:
            self._highest = seq
            return seq
        extended = self._highest + seq_diff(seq, self._highest & 0xFFFF)
        if extended > self._highest:
            self._highest = extended
        return extended
