"""The forwarding path's pure logic, with an injected clock: rewriting, NACK cache, keyframe
request coalescing and upstream loss tracking."""

from __future__ import annotations

import random
import struct

import pytest

from sfu.keyframe_requests import KeyframeRequests
from sfu.loss_tracker import LossTracker
from sfu.packet_cache import PacketCache
from sfu.rtp_rewriter import RtpRewriter
from sfu.seqnum import SeqUnwrapper, seq_diff
from support import FakeClock


def rtp(seq: int, ts: int, ssrc: int = 0x1234, pt: int = 96, marker: bool = False, payload: bytes = b"data") -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def fields(packet: bytes | bytearray) -> tuple[int, int, int, int, bool]:
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", packet)
    return seq, ts, ssrc, b1 & 0x7F, bool(b1 & 0x80)


def test_seq_arithmetic_wraps() -> None:
    assert seq_diff(1, 65535) == 2 and seq_diff(65535, 1) == -2 and seq_diff(5, 5) == 0
    unwrap = SeqUnwrapper()
    assert [unwrap.unwrap(s) for s in (65534, 65535, 0, 65533, 1)] == [65534, 65535, 65536, 65533, 65537]


def test_rewriter_sets_subscriber_fields_and_keeps_everything_else() -> None:
    clock = FakeClock()
    rewriter = RtpRewriter(ssrc=0xCAFE, payload_type=102, clock_rate=90000, clock=clock, rng=random.Random(1))
    outs = [rewriter.rewrite(rtp(1000 + i, 5000 + i * 3000, marker=i == 2, payload=b"p%d" % i)) for i in range(3)]
    seqs = [fields(o)[0] for o in outs if o is not None]
    assert [(s - seqs[0]) & 0xFFFF for s in seqs] == [0, 1, 2]
    tss = [fields(o)[1] for o in outs if o is not None]
    assert [(t - tss[0]) & 0xFFFFFFFF for t in tss] == [0, 3000, 6000]
    assert {fields(o)[2] for o in outs if o is not None} == {0xCAFE}
    assert {fields(o)[3] for o in outs if o is not None} == {102}
    assert [fields(o)[4] for o in outs if o is not None] == [False, False, True]  # the marker bit survives
    assert outs[1] is not None and outs[1][12:] == b"p1"


def test_rewriter_continues_across_a_source_change_without_gaps() -> None:
    clock = FakeClock()
    rewriter = RtpRewriter(ssrc=7, payload_type=96, clock_rate=90000, clock=clock)
    first = [rewriter.rewrite(rtp(s, 1000 + s * 3000, ssrc=1)) for s in range(65530, 65536)]
    first += [rewriter.rewrite(rtp(s, 1000 + (65536 + s) * 3000, ssrc=1)) for s in range(0, 4)]  # wraps
    clock.advance(0.5)
    rewriter.restart()  # the publisher reconnected: new SSRC, random new numbers
    second = [rewriter.rewrite(rtp(s, 777_777 + (s - 40000) * 3000, ssrc=2)) for s in range(40000, 40003)]
    out = [fields(o) for o in first + second if o is not None]
    seqs = [f[0] for f in out]
    assert all(((b - a) & 0xFFFF) == 1 for a, b in zip(seqs, seqs[1:]))  # no gap, no loss burst for the player
    jump = (out[len(first)][1] - out[len(first) - 1][1]) & 0xFFFFFFFF
    assert jump == 45000  # 0.5 s of wall time at 90 kHz


def test_rewriter_maps_late_packets_and_drops_those_from_before_a_restart() -> None:
    clock = FakeClock()
    rewriter = RtpRewriter(ssrc=7, payload_type=96, clock_rate=48000, clock=clock)
    a = rewriter.rewrite(rtp(100, 0))
    c = rewriter.rewrite(rtp(102, 1920))
    b = rewriter.rewrite(rtp(101, 960))  # reordered on the way
    assert a and b and c
    assert [(fields(x)[0] - fields(a)[0]) & 0xFFFF for x in (a, b, c)] == [0, 1, 2]
    rewriter.restart()
    d = rewriter.rewrite(rtp(200, 9600))
    assert d is not None and (fields(d)[0] - fields(c)[0]) & 0xFFFF == 1
    assert rewriter.rewrite(rtp(199, 8640)) is None  # from before the cut


def test_rewriter_maps_nacked_numbers_back_to_the_source() -> None:
    clock = FakeClock()
    rewriter = RtpRewriter(ssrc=7, payload_type=96, clock_rate=90000, clock=clock)
    outs = [rewriter.rewrite(rtp(s & 0xFFFF, s * 10)) for s in range(65500, 65600)]
    out_seqs = [fields(o)[0] for o in outs if o is not None]
    assert [rewriter.source_seq(s) for s in out_seqs[-5:]] == [(s & 0xFFFF) for s in range(65595, 65600)]
    assert rewriter.source_seq((out_seqs[-1] + 1) & 0xFFFF) is None  # not sent yet
    rewriter.restart()
    rewriter.rewrite(rtp(9, 0))
    assert rewriter.source_seq(out_seqs[-1]) is None  # from the previous epoch: can't be served


def test_packet_cache_answers_only_for_the_exact_sequence_number() -> None:
    cache = PacketCache(seconds=1.0, size=8, max_size=8)
    for seq in range(20):
        cache.put(seq, b"p%d" % seq)
    assert cache.get(19) == b"p19" and cache.get(12) == b"p12"
    assert cache.get(11) is None  # overwritten by 19 (the ring may not grow past 8)
    assert cache.get(27) is None  # same slot, other number
    with pytest.raises(ValueError):
        PacketCache(size=1000)


def test_packet_cache_holds_its_seconds_whatever_the_packet_rate() -> None:
    """Sized by time: a stream of 1,000 packets a second keeps its last second, as one of 50 does, and
    what is older than that is gone even when its slot was not reused."""
    for rate in (50, 1000):
        cache = PacketCache(seconds=1.0, size=16, max_size=16384)
        for seq in range(3 * rate):
            cache.now = seq / rate
            cache.put(seq & 0xFFFF, b"%d" % seq)
        newest = 3 * rate - 1
        assert all(cache.get(s) == b"%d" % s for s in range(newest - rate + 1, newest + 1)), rate
        assert cache.size <= 4 * rate  # grew to hold a second, not much more
        cache.now += 2.0
        assert cache.get(newest) is None  # too old to be worth re-sending
    huge = PacketCache(seconds=1.0, size=16, max_size=64)
    for seq in range(1000):
        huge.put(seq, b"x")  # all at once: more than a second's worth would not fit
    assert huge.size == 64


def test_keyframe_requests_are_coalesced_and_rate_limited() -> None:
    clock = FakeClock()
    requests = KeyframeRequests(clock, min_interval=0.5, retry_after=1.0)
    sent = [requests.request() for _ in range(1000)]  # a thousand joiners at once
    assert sent.count(True) == 1 and requests.requested == 1000
    clock.advance(0.2)
    assert not requests.due()
    requests.keyframe_arrived()
    clock.advance(0.5)
    assert not requests.due()  # the keyframe answered everyone who was waiting

    assert requests.request()  # the interval has passed
    assert not requests.request()
    clock.advance(0.5)
    assert requests.due()  # the remembered request goes out when the interval ends
    assert not requests.due()
    clock.advance(1.0)
    assert requests.due()  # no keyframe came: the PLI was lost, ask again
    requests.keyframe_arrived()
    clock.advance(5)
    assert not requests.due()
    assert requests.sent == 4


def test_loss_tracker_nacks_retries_and_gives_up_into_a_keyframe_request() -> None:
    clock = FakeClock()
    tracker = LossTracker(clock, retry_interval=0.04, max_tries=3, max_age=1.0)
    for seq in (65533, 65534, 2, 3):  # 65535, 0, 1 lost across the wrap
        tracker.received(seq)
    assert tracker.poll() == ([65535, 0, 1], False)
    assert tracker.poll() == ([], False)  # not again before retry_interval
    tracker.received(0)  # repaired by a retransmission
    clock.advance(0.05)
    assert tracker.poll() == ([65535, 1], False)
    clock.advance(0.05)
    assert tracker.poll() == ([65535, 1], False)
    clock.advance(0.05)
    nack, keyframe = tracker.poll()
    assert nack == [] and keyframe  # three tries without repair: the picture needs a keyframe
    assert tracker.lost == 2 and tracker.repaired == 1


def test_loss_tracker_ignores_restarts_and_gaps_before_a_keyframe() -> None:
    clock = FakeClock()
    tracker = LossTracker(clock, max_gap=100)
    tracker.received(10)
    tracker.received(5000)  # a jump, not loss
    assert tracker.poll() == ([], True)
    for seq in (5003, 5008, 5010):
        tracker.received(seq)
    tracker.keyframe_arrived(5008)  # what is missing before the keyframe no longer matters
    assert tracker.poll() == ([5009], False)  # a hole inside the keyframe still does
