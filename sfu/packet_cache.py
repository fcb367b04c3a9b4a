"""The last packets of one source stream, by sequence number, to answer NACKs without asking upstream.

Sized by time, not by count: it keeps at least `seconds` of the stream whatever its packet rate (a
4K stream sends ten times the packets of a 360p one), growing its ring when a packet younger than that
would be overwritten, up to `max_size` packets. Time is the coarse `now` its owner sets on its timer,
so the packet path reads no clock.
"""

from __future__ import annotations


class PacketCache:
    __slots__ = ("seconds", "max_size", "now", "_mask", "_seqs", "_packets", "_times")

    def __init__(self, seconds: float = 2.0, size: int = 512, max_size: int = 16384) -> None:
        if size <= 0 or size & (size - 1) or max_size & (max_size - 1):
            raise ValueError("the cache sizes must be powers of two")
        self.seconds = seconds
        self.max_size = max_size
        self.now = 0.0  # set by the owner's timer
        self._mask = size - 1
        self._seqs = [-1] * size
        self._packets: list[bytes | None] = [None] * size
        self._times = [0.0] * size

    @property
    def size(self) -> int:
        return self._mask + 1

    def put(self, seq: int, packet: bytes) -> None:
        slot = seq & self._mask
        held = self._seqs[slot]
        if held >= 0 and held != seq and self.now - self._times[slot] < self.seconds and self._mask < self.max_size - 1:
            self._grow()  # the ring holds less than `seconds` of this stream
            slot = seq & self._mask
        self._seqs[slot] = seq
        self._packets[slot] = packet
        self._times[slot] = self.now

    def get(self, seq: int) -> bytes | None:
        slot = seq & self._mask
        if self._seqs[slot] != seq or self.now - self._times[slot] > self.seconds:
            return None
        return self._packets[slot]

    def clear(self) -> None:
        size = self._mask + 1
        self._seqs = [-1] * size
        self._packets = [None] * size
        self._times = [0.0] * size

    def _grow(self) -> None:
        seqs, packets, times = self._seqs, self._packets, self._times
        size = 2 * len(seqs)
        self._mask = size - 1
        self._seqs = [-1] * size
        self._packets = [None] * size
        self._times = [0.0] * size
        for seq, packet, at in zip(seqs, packets, times):
            if seq >= 0:
                slot = seq & self._mask
                self._seqs[slot], self._packets[slot], self._times[slot] = seq, packet, at
