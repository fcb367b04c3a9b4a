"""The last packets of one source stream, by sequence number, to answer NACKs without asking upstream."""

from __future__ import annotations


class PacketCache:
    __slots__ = ("_mask", "_seqs", "_packets")

    def __init__(self, size: int = 1024) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError("the cache size must be a power of two")
        self._mask = size - 1
        self._seqs = [-1] * size
        self._packets: list[bytes | None] = [None] * size

    def put(self, seq: int, packet: bytes) -> None:
        slot = seq & self._mask
        self._seqs[slot] = seq
        self._packets[slot] = packet

    def get(self, seq: int) -> bytes | None:
        slot = seq & self._mask
        return self._packets[slot] if self._seqs[slot] == seq else None

    def clear(self) -> None:
        self._seqs = [-1] * len(self._seqs)
        self._packets = [None] * len(self._packets)
