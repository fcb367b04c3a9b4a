"""One subscriber's copy of one feed: rewritten, gated on keyframes, bounded, answering its NACKs.

A down track starts waiting for a keyframe (video) and goes back to waiting when its socket's write
buffer grows past `max_buffered` bytes: a slow viewer then skips to the next keyframe instead of piling
up delay or memory, and nobody else notices. NACKs are answered from the feed's packet cache, as RTX
when the subscriber negotiated it, within a budget: each packet is re-sent at most once per round trip
(half a second at most: a viewer repeating its NACKs gets nothing twice), and the bytes re-sent refill at `RTX_SHARE` of the
stream's own rate, so a viewer sending NACKs for everything costs at most that share on top of its
stream, however large and frequent its NACKs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sfu import rtx
from sfu.feed import Feed
from sfu.header_extensions import shared_writer
from sfu.media_format import PayloadMap
from sfu.output import DROP_REASONS, Output
from sfu.rtp_rewriter import RtpRewriter
from sfu.sender_reports import NTP_EPOCH_OFFSET, seconds_to_ntp

DEFAULT_MAX_BUFFERED = 256 * 1024
RTX_SHARE = 0.5  # re-sent bytes refill at this share of the stream's rate...
RTX_BURST = 1.0  # ...into a bucket holding this many seconds of that
RTX_FLOOR = 32_000  # bytes per second at least (a stream's first second, audio)
DEFAULT_RTT = 0.1  # seconds, until the viewer's receiver reports give one
MIN_RTT = 0.02
MAX_RESEND_WAIT = 0.5  # seconds: a packet may be re-sent again after this long, whatever the round trip
# says (a report computed on a stalled client can claim seconds, and then each loss would get one try)
_RESENT_SLOTS = 1024  # the last re-send time per source sequence number, as a ring


class DownTrack:
    __slots__ = (
        "feed",
        "target",
        "payloads",
        "_output",
        "_rewriter",
        "_extensions",
        "_rtx_ssrc",
        "_rtx_seq",
        "_clock",
        "max_buffered",
        "active",
        "waiting",
        "packets",
        "octets",
        "retransmitted",
        "dropped",
        "keyframe_waits",
        "nacks_refused",
        "rtt",
        "_rtx_tokens",
        "_rtx_refilled_at",
        "_resent_seq",
        "_resent_at",
    )

    def __init__(
        self,
        feed: Feed,
        payloads: PayloadMap,
        ssrc: int,
        rtx_ssrc: int,
        output: Output,
        clock: Callable[[], float] = time.monotonic,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
    ) -> None:
        self.feed = feed
        self.target: Feed | None = None  # the feed this moves to at its next keyframe (a layer switch)
        self.payloads = payloads
        self._output = output
        self._clock = clock
        self._rewriter = RtpRewriter(ssrc, payloads.payload_type, feed.format.clock_rate, clock)
        self._extensions = shared_writer(payloads.extension_ids, payloads.mid)
        self._rtx_ssrc = rtx_ssrc
        self._rtx_seq = 0
        self.max_buffered = max_buffered
        self.active = False  # the subscriber's transport is up
        self.waiting = feed.kind == "video"
        self.packets = 0
        self.octets = 0
        self.retransmitted = 0
        self.dropped = [0] * len(DROP_REASONS)  # packets not sent, by reason (`sfu.output` codes)
        self.keyframe_waits = 0
        self.nacks_refused = 0  # packets asked for again that were not re-sent (budget, or within one round trip)
        self.rtt: float | None = None  # from the viewer's receiver reports
        self._rtx_tokens = float(RTX_FLOOR)
        self._rtx_refilled_at = clock()
        self._resent_seq = [-1] * _RESENT_SLOTS
        self._resent_at = [0.0] * _RESENT_SLOTS

    @property
    def ssrc(self) -> int:
        return self._rewriter.ssrc

    def start(self) -> None:
        """The subscriber is connected: begin at the next keyframe (asked for now)."""
        self.active = True
        if self.waiting:
            self.feed.request_keyframe()

    def write(self, packet: bytes, keyframe: bool, now_ntp: float) -> None:
        if not self.active:
            return
        if self.waiting:
            if not keyframe:
                return
            self.waiting = False
            self._rewriter.restart()
        out = self._extensions.rewrite(packet, now_ntp)
        if not self._rewriter.rewrite_into(out):
            return
        buffered = self._output.send(out)
        if buffered < 0:
            self.dropped[-buffered] += 1
            return
        self.packets += 1
        self.octets += len(out)
        if buffered > self.max_buffered:
            self._fall_behind()

    def _fall_behind(self) -> None:
        if self.feed.kind != "video":
            return  # audio is small; the socket drops what it cannot take
        self.waiting = True
        self.keyframe_waits += 1
        self.feed.request_keyframe()

    def switch_to(self, feed: Feed) -> None:
        """Move to `feed` (another layer of the same track) at its next keyframe, asked for now; until
        then the current feed goes on, so the picture never stops."""
        self.cancel_switch()
        if feed is self.feed:
            return
        self.target = feed
        feed.switching.append(self)
        feed.request_keyframe()

    def cancel_switch(self) -> None:
        if self.target is not None and self in self.target.switching:
            self.target.switching.remove(self)
        self.target = None

    def adopt(self, feed: Feed) -> None:
        """`feed`'s keyframe starts now: leave the old feed and continue the numbering from here."""
        if self.active and self in self.feed.downtracks:
            self.feed.downtracks.remove(self)
            feed.downtracks.append(self)
        self.feed = feed
        self.target = None
        self._rewriter.restart()
        self.waiting = False

    def source_changed(self) -> None:
        """A new publisher connection: continue the numbering, from its next keyframe."""
        self._rewriter.restart()
        if self.feed.kind == "video":
            self.waiting = True

    # --- feedback from the subscriber ---

    def on_nack(self, lost: list[int]) -> None:
        now = self._clock()
        rate = max(RTX_FLOOR, RTX_SHARE * self.feed.bitrate / 8)
        self._rtx_tokens = min(rate * RTX_BURST, self._rtx_tokens + rate * (now - self._rtx_refilled_at))
        self._rtx_refilled_at = now
        once_per = min(MAX_RESEND_WAIT, max(MIN_RTT, self.rtt or DEFAULT_RTT))
        rtx_pt = self.payloads.rtx_payload_type
        now_ntp = time.time() + NTP_EPOCH_OFFSET
        for index, out_seq in enumerate(lost):
            source = self._rewriter.source_seq(out_seq)
            if source is None:
                continue
            slot = source % _RESENT_SLOTS
            if self._resent_seq[slot] == source and now - self._resent_at[slot] < once_per:
                self.nacks_refused += 1
                continue
            cached = self.feed.cache.get(source)
            if cached is None:
                continue
            if self._rtx_tokens < len(cached):
                self.nacks_refused += len(lost) - index
                return
            out = self._extensions.rewrite(cached, now_ntp)
            if not self._rewriter.rewrite_into(out):
                continue
            if rtx_pt is not None:
                self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
                out = rtx.wrap(out, rtx_pt, self._rtx_ssrc, self._rtx_seq)
            sent = self._output.send(out)
            if sent < 0:
                self.dropped[-sent] += 1
                continue
            self._rtx_tokens -= len(out)
            self._resent_seq[slot] = source
            self._resent_at[slot] = now
            self.retransmitted += 1

    def on_keyframe_request(self) -> None:
        self.feed.request_keyframe()

    def sender_report(self) -> tuple[int, int, int, int]:
        """(NTP timestamp, RTP timestamp, packets, octets) for this subscriber's next sender report."""
        mapping = self.feed.mapping
        now = self._clock()
        if mapping is not None:
            ntp_seconds, source_ts = mapping.at(now)
            rtp_ts = self._rewriter.out_timestamp(source_ts)
        else:  # no report from the publisher yet: pin our own clock to what was sent last
            rtp_ts, sent_at = self._rewriter.last_sent
            ntp_seconds = time.time() + NTP_EPOCH_OFFSET - (now - sent_at)
        return seconds_to_ntp(ntp_seconds), rtp_ts, self.packets, self.octets
