"""Rewrites one source RTP stream into one subscriber's stream: its SSRC, payload type, continuous
sequence numbers and rebased timestamps.

A subscriber sees one unbroken stream even when what feeds it changes (a publisher reconnects, a
rendition switch, a restart after keyframe-wait): `restart()` makes the next packet open a new epoch
whose numbers continue right after the last ones sent, and whose timestamps advance by the wall time
that passed, so players neither see a loss burst nor a clock jump.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

from sfu.seqnum import SeqUnwrapper

_HEADER = struct.Struct("!HII")  # sequence number, timestamp, SSRC at byte 2


class RtpRewriter:
    __slots__ = (
        "ssrc",
        "payload_type",
        "_rate",
        "_clock",
        "_unwrap",
        "_seq_offset",
        "_ts_offset",
        "_epoch_first",
        "_last_out_seq",
        "_last_out_ts",
        "_last_wall",
        "_restart",
        "packets",
    )

    def __init__(
        self, ssrc: int, payload_type: int, clock_rate: int, clock: Callable[[], float], rng: random.Random | None = None
    ) -> None:
        rng = rng or random.Random()
        self.ssrc = ssrc
        self.payload_type = payload_type
        self._rate = clock_rate
        self._clock = clock
        self._unwrap = SeqUnwrapper()
        self._seq_offset = 0
        self._ts_offset = 0
        self._epoch_first = 0  # extended source seq of the epoch's first packet
        # Random starting points (RFC 3550 section 5.1), as if one packet had been sent before.
        self._last_out_seq = rng.randrange(1 << 16)
        self._last_out_ts = rng.randrange(1 << 32)
        self._last_wall = clock()
        self._restart = True
        self.packets = 0

    def restart(self) -> None:
        """The next packet comes from a new source (or after a deliberate cut): continue from there."""
        self._restart = True
        self._unwrap = SeqUnwrapper()

    def rewrite(self, packet: bytes | bytearray) -> bytearray | None:
        """A copy of `packet` with this subscriber's header fields; None for a packet from before the epoch."""
        out = bytearray(packet)
        return out if self.rewrite_into(out) else None

    def rewrite_into(self, out: bytearray) -> bool:
        """Rewrite the header of `out` in place; False (and `out` untouched) for a packet from before the epoch."""
        seq, ts = _HEADER.unpack_from(out, 2)[:2]
        extended = self._unwrap.unwrap(seq)
        if self._restart:
            self._open_epoch(extended, ts)
        elif extended < self._epoch_first:
            return False  # older than the cut: it belongs to what the subscriber never got
        out_seq = (extended + self._seq_offset) & 0xFFFF
        out_ts = (ts + self._ts_offset) & 0xFFFFFFFF
        if extended >= self._unwrap.highest:
            self._last_out_seq = extended + self._seq_offset
            self._last_out_ts = out_ts
            self._last_wall = self._clock()
        out[1] = (out[1] & 0x80) | self.payload_type
        _HEADER.pack_into(out, 2, out_seq, out_ts, self.ssrc)
        self.packets += 1
        return True

    def _open_epoch(self, extended: int, ts: int) -> None:
        now = self._clock()
        elapsed = max(1, round((now - self._last_wall) * self._rate))
        self._seq_offset = self._last_out_seq + 1 - extended
        self._ts_offset = (self._last_out_ts + elapsed - ts) & 0xFFFFFFFF
        self._epoch_first = extended
        self._restart = False

    def source_seq(self, out_seq: int) -> int | None:
        """The 16-bit source sequence number behind a sequence number this subscriber got (for NACKs)."""
        if self._restart:
            return None
        newest = self._last_out_seq & 0xFFFF
        back = (newest - out_seq) & 0xFFFF
        if back >= 0x8000:
            return None  # from the future: not sent
        extended_out = self._last_out_seq - back
        source = extended_out - self._seq_offset
        if source < self._epoch_first:
            return None
        return source & 0xFFFF

    def out_timestamp(self, source_ts: int) -> int:
        """The subscriber's RTP timestamp for a source timestamp (sender reports map through this)."""
        return (source_ts + self._ts_offset) & 0xFFFFFFFF

    @property
    def last_sent(self) -> tuple[int, float]:
        """(RTP timestamp, local clock time) of the newest packet sent: a sender-report basis when the
        publisher has not sent a report of its own yet."""
        return self._last_out_ts, self._last_wall
