"""A feed and its down tracks with an in-memory output: keyframe gating, NACK answered as RTX from the
cache, the slow-viewer bound, upstream feedback, and sender reports from the publisher's clock."""

from __future__ import annotations

import struct

from sfu.downtrack import DownTrack
from sfu.feed import Feed
from sfu.header_extensions import ABS_SEND_TIME_URI, MID_URI, read_extensions
from sfu.media_format import MediaFormat, PayloadMap
from sfu.sender_reports import seconds_to_ntp
from support import FakeClock

H264 = MediaFormat("video", "H264", 90000)
IDR = bytes([0x65, 0x88])  # a single-NAL IDR slice, first_mb_in_slice = 0
P_SLICE = bytes([0x41, 0x9A])


class MemoryOutput:
    """Keeps what a subscriber would have been sent; `backlog` plays the socket's write buffer."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.backlog = 0

    def send(self, packet: bytes | bytearray) -> int:
        self.sent.append(bytes(packet))
        return self.backlog


class RecordingUpstream:
    def __init__(self) -> None:
        self.plis: list[int] = []
        self.nacks: list[list[int]] = []

    async def request_keyframe(self, media_ssrc: int) -> None:
        self.plis.append(media_ssrc)

    async def nack(self, media_ssrc: int, lost: list[int]) -> None:
        self.nacks.append(lost)


def rtp(seq: int, ts: int, payload: bytes, pt: int = 102, ssrc: int = 0xAAAA) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, ts, ssrc) + payload


def setup(rtx: bool = True) -> tuple[Feed, DownTrack, MemoryOutput, RecordingUpstream, FakeClock]:
    clock = FakeClock()
    feed = Feed(H264, clock)
    upstream = RecordingUpstream()
    feed.attach(upstream, 0xAAAA)
    output = MemoryOutput()
    payloads = PayloadMap(H264, 96, 97 if rtx else None, "1", {MID_URI: 1, ABS_SEND_TIME_URI: 3})
    down = DownTrack(feed, payloads, ssrc=0xBBBB, rtx_ssrc=0xCCCC, output=output, clock=clock, max_buffered=1000)
    feed.downtracks.append(down)
    down.start()
    return feed, down, output, upstream, clock


async def test_a_new_viewer_waits_for_a_keyframe_that_is_asked_for_once() -> None:
    feed, down, output, upstream, _ = setup()
    for seq in range(10, 14):
        feed.on_rtp(rtp(seq, 3000, P_SLICE))
    assert output.sent == []
    await feed.tick()
    assert upstream.plis == [0xAAAA]
    feed.on_rtp(rtp(14, 6000, IDR))
    feed.on_rtp(rtp(15, 9000, P_SLICE))
    assert len(output.sent) == 2
    first = output.sent[0]
    assert struct.unpack_from("!BBHII", first)[1] & 0x7F == 96 and struct.unpack_from("!I", first, 8)[0] == 0xBBBB
    assert read_extensions(first)[1] == b"1"  # the viewer's own mid
    assert (struct.unpack_from("!H", output.sent[1], 2)[0] - struct.unpack_from("!H", first, 2)[0]) & 0xFFFF == 1
    await feed.tick()
    assert upstream.plis == [0xAAAA]  # the keyframe came: nothing more to ask


async def test_a_nack_is_answered_from_the_cache_as_rtx() -> None:
    feed, down, output, _, _ = setup()
    feed.on_rtp(rtp(100, 0, IDR + b"keyframe"))
    feed.on_rtp(rtp(101, 0, P_SLICE + b"second"))
    sent_seq = struct.unpack_from("!H", output.sent[1], 2)[0]
    down.on_nack([sent_seq, (sent_seq + 500) & 0xFFFF])  # the second was never sent: ignored
    assert len(output.sent) == 3 and down.retransmitted == 1
    repair = output.sent[2]
    assert repair[1] & 0x7F == 97 and struct.unpack_from("!I", repair, 8)[0] == 0xCCCC
    start = 12 + 4 + 4 * struct.unpack_from("!H", repair, 14)[0]
    assert struct.unpack_from("!H", repair, start)[0] == sent_seq  # the original sequence number
    assert repair[start + 2 :] == P_SLICE + b"second"


async def test_a_packet_is_resent_once_per_round_trip_and_within_the_budget() -> None:
    feed, down, output, _, clock = setup()
    feed.on_rtp(rtp(1, 0, IDR))
    for seq in range(2, 400):  # 400 packets of ~1 kB: 0.4 MB in the cache
        feed.on_rtp(rtp(seq, seq * 3000, P_SLICE + bytes(1000)))
    sent = [struct.unpack_from("!H", p, 2)[0] for p in output.sent]
    down.rtt = 0.05
    down.on_nack(sent[-3:])
    assert down.retransmitted == 3
    down.on_nack(sent[-3:])  # asked again within one round trip: it is on its way already
    assert down.retransmitted == 3 and down.nacks_refused == 3
    clock.advance(0.06)
    down.on_nack(sent[-3:])  # a round trip later it may have been lost again
    assert down.retransmitted == 6
    before = len(output.sent)
    down.on_nack(sent)  # everything: only what the budget allows (its floor, 32 kB/s, in a 1 s bucket)
    resent_bytes = sum(len(p) for p in output.sent[before:])
    assert resent_bytes <= 32_000 and down.nacks_refused > 300
    clock.advance(0.5)  # the bucket refills at its rate
    before = len(output.sent)
    down.on_nack(sent[:200])
    assert 10_000 <= sum(len(p) for p in output.sent[before:]) <= 17_000

    # A round trip of seconds (a report from a stalled client) does not leave a loss one try.
    down.rtt = 5.0
    clock.advance(1.0)
    retransmitted = down.retransmitted
    down.on_nack(sent[-1:])
    clock.advance(0.6)
    down.on_nack(sent[-1:])
    assert down.retransmitted == retransmitted + 2


async def test_without_rtx_a_nack_resends_the_packet_itself() -> None:
    feed, down, output, _, _ = setup(rtx=False)
    feed.on_rtp(rtp(7, 0, IDR))
    down.on_nack([struct.unpack_from("!H", output.sent[0], 2)[0]])
    assert output.sent[1][:12] == output.sent[0][:12]


async def test_a_slow_viewer_goes_back_to_keyframe_wait_without_touching_others() -> None:
    feed, slow, slow_out, upstream, _ = setup()
    fast_out = MemoryOutput()
    fast = DownTrack(feed, slow.payloads, 0xDDDD, 0xEEEE, fast_out, max_buffered=1000)
    feed.downtracks.append(fast)
    fast.start()
    feed.on_rtp(rtp(1, 0, IDR))
    slow_out.backlog = 5000  # its socket cannot keep up
    feed.on_rtp(rtp(2, 0, P_SLICE))
    feed.on_rtp(rtp(3, 0, P_SLICE))
    assert slow.waiting and slow.keyframe_waits == 1 and len(slow_out.sent) == 2
    assert len(fast_out.sent) == 3 and not fast.waiting
    slow_out.backlog = 0
    await feed.tick()
    assert upstream.plis  # the slow one asked for the keyframe it now needs
    feed.on_rtp(rtp(4, 3000, IDR))
    assert len(slow_out.sent) == 3 and not slow.waiting
    gap = (struct.unpack_from("!H", slow_out.sent[2], 2)[0] - struct.unpack_from("!H", slow_out.sent[1], 2)[0]) & 0xFFFF
    assert gap == 1  # no hole for it to NACK: it skipped, it did not lose


async def test_publisher_loss_is_nacked_upstream_then_given_up_for_a_keyframe() -> None:
    feed, _, _, upstream, clock = setup()
    feed.on_rtp(rtp(1, 0, IDR))
    feed.on_rtp(rtp(4, 0, P_SLICE))  # 2 and 3 lost on the way in
    await feed.tick()
    assert upstream.nacks == [[2, 3]]
    clock.advance(1.0)  # never repaired
    await feed.tick()
    assert upstream.plis  # the picture is broken until the next keyframe


def test_sender_reports_carry_the_publisher_clock_into_the_viewer_timestamps() -> None:
    feed, down, output, _, clock = setup()
    feed.on_rtp(rtp(1, 90_000, IDR))
    out_ts = struct.unpack_from("!I", output.sent[0], 4)[0]
    feed.on_sender_report(seconds_to_ntp(3_900_000_000.0), 90_000)  # publisher: NTP t <-> RTP 90000
    clock.advance(0.5)
    ntp, rtp_ts, packets, octets = down.sender_report()
    assert abs((ntp >> 32) + (ntp & 0xFFFFFFFF) / 2**32 - 3_900_000_000.5) < 1e-6
    assert rtp_ts == (out_ts + 45_000) & 0xFFFFFFFF  # half a second later at 90 kHz, in the viewer's numbering
    assert packets == 1 and octets == len(output.sent[0])
