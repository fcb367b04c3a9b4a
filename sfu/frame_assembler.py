"""Whole encoded frames of one publisher track, from its RTP packets, for the frame sinks.

A consumer that writes frames to a file or a decoder (the recorder, the HLS ladder, thumbnails) must
never get a frame with a packet missing, nor a frame that refers to one it never got: the picture
would decode with errors until the next keyframe, and a recording keeps them for ever. So frames are
handed on strictly in order, and only whole (every sequence number from the frame's first packet to
its marker bit, or to the next frame's first packet). A gap waits `max_wait` seconds for the
retransmission the SFU asks for upstream (`sfu.loss_tracker`); when it does not come, the frames
behind it are skipped up to the next keyframe, one is asked for, and the time skipped is counted.

Audio frames (Opus, one packet each) stand alone: a lost one is a gap, not a reason to wait.

Everything here runs on the packet path: synchronous, no logging per packet.
"""

from __future__ import annotations

from collections.abc import Callable

from aiortc.codecs.h264 import H264PayloadDescriptor
from aiortc.codecs.vpx import VpxPayloadDescriptor

from sfu.keyframe import is_keyframe_start, rtp_payload_offset
from sfu.seqnum import SeqUnwrapper

# (depacketised frame, RTP timestamp): one whole frame for the sinks.
FrameHandler = Callable[[bytes, int], None]

DEFAULT_MAX_WAIT = 0.5  # seconds a gap may wait for its retransmission
START_HOLD = 0.1  # seconds a keyframe whose first packet may still be on its way is held
DEFAULT_MAX_PACKETS = 4096  # packets held behind a gap before giving up on it at once
WAITING_PACKETS = 512  # packets kept while waiting for a keyframe (in case its first one comes late)
MAX_BEHIND = 1024  # a packet this far behind the next frame is no late one...
RESTART_AFTER = 8  # ...and this many in a row mean the sender's numbering restarted


def _opens_frame(codec: str, packet: bytes) -> bool:
    """Is this keyframe packet surely its frame's first? An H.264 IDR slice may have had its parameter
    sets (or an access unit delimiter) in a packet before it; a VP8 keyframe start is its first."""
    if codec.lower() != "h264":
        return True
    offset = rtp_payload_offset(packet)
    if offset < 0 or offset + 3 >= len(packet):
        return False
    nal_type = packet[offset] & 0x1F
    if nal_type == 24:  # STAP-A: the first aggregated unit's type, after its 16-bit size
        nal_type = packet[offset + 3] & 0x1F
    return nal_type in (7, 9)  # SPS, access unit delimiter


def _carries_nothing(packet: bytes) -> bool:
    """A padding-only packet (RFC 3550 5.1): it has a sequence number, and no media."""
    offset = rtp_payload_offset(packet)
    return offset >= 0 and len(packet) - (packet[-1] if packet[0] & 0x20 else 0) <= offset


def _h264_payload(payload: bytes) -> bytes:
    return H264PayloadDescriptor.parse(payload)[1]


def _vp8_payload(payload: bytes) -> bytes:
    return VpxPayloadDescriptor.parse(payload)[1]


def _opus_payload(payload: bytes) -> bytes:
    return payload


_DEPAYLOAD: dict[str, Callable[[bytes], bytes]] = {"h264": _h264_payload, "vp8": _vp8_payload, "opus": _opus_payload}


class FrameAssembler:
    """Packets in (any order, duplicates, gaps), whole frames out, in order.

    Each packet is looked at about once: `_scan` remembers how far the frame being gathered has been
    found contiguous. A hole (a number missing below the highest held) starts the give-up clock, and
    every step it moves forward starts it afresh, so a keyframe that takes long to arrive whole is
    never given up on while its packets keep coming in order.
    """

    __slots__ = ("_codec", "_video", "_rate", "_emit", "_request_keyframe", "_clock", "max_wait", "max_packets",
                 "_depayload", "_unwrap", "_packets", "_next", "_scan", "_highest", "_hole_at", "_hole_since",
                 "_held_since", "_waiting_since", "_behind", "_last_ts", "_skipping_from", "frames",
                 "skipped_frames", "skipped_seconds", "gaps")

    def __init__(
        self,
        codec: str,
        kind: str,
        clock_rate: int,
        emit: FrameHandler,
        request_keyframe: Callable[[], None],
        clock: Callable[[], float],
        max_wait: float = DEFAULT_MAX_WAIT,
        max_packets: int = DEFAULT_MAX_PACKETS,
    ) -> None:
        depayload = _DEPAYLOAD.get(codec.lower())
        if depayload is None:
            raise ValueError(f"no depacketiser for codec {codec!r}")
        self._codec = codec
        self._video = kind == "video"
        self._rate = clock_rate
        self._emit = emit
        self._request_keyframe = request_keyframe
        self._clock = clock
        self.max_wait = max_wait
        self.max_packets = max_packets
        self._depayload = depayload
        self._unwrap = SeqUnwrapper()
        self._packets: dict[int, bytes] = {}  # extended seq -> packet, not yet handed on
        self._next: int | None = None  # extended seq the next frame starts at; None: wait for a keyframe
        self._scan = 0  # the frame at `_next` is contiguous and unfinished up to (not including) this seq
        self._highest = -1  # the highest seq held
        self._hole_at: int | None = None  # the first missing seq with packets held beyond it...
        self._hole_since = 0.0  # ...since when it is the first missing one
        self._held_since: float | None = None  # a keyframe start that may not be its frame's first, since when
        self._waiting_since: float | None = clock()  # waiting for a keyframe since when
        self._behind = 0  # packets in a row far behind the next frame
        self._last_ts: int | None = None  # RTP timestamp of the last frame handed on
        self._skipping_from: int | None = None  # timestamp of the last whole frame before a skip
        self.frames = 0
        self.skipped_frames = 0  # frames with a packet missing (or behind such a one), not handed on
        self.skipped_seconds = 0.0  # media time from the last whole frame to the keyframe after a skip
        self.gaps = 0  # times the assembler gave up waiting and skipped to a keyframe

    def reset(self) -> None:
        """Forget everything: the next frame handed on is a keyframe (a new source, or new sinks)."""
        self._unwrap = SeqUnwrapper()
        self._packets.clear()
        self._wait_for_keyframe()
        self._highest = -1
        self._held_since = None
        self._behind = 0
        self._last_ts = None
        self._skipping_from = None

    def push(self, packet: bytes) -> None:
        if len(packet) < 12:
            return
        extended = self._unwrap.unwrap((packet[2] << 8) | packet[3])
        if not self._video:
            if (self._next is None or extended >= self._next) and not _carries_nothing(packet):
                self._next = extended + 1
                self._hand_on([packet])
            return
        packets = self._packets
        start = self._next
        if start is not None and extended < start:
            if start - extended > MAX_BEHIND:
                self._behind += 1
                if self._behind >= RESTART_AFTER:  # not a stray late packet: the numbering restarted
                    self.reset()
                    self._request_keyframe()
                return
            if not self._earlier_part(extended, packet):
                if self._held_since is not None and extended == start - 1:
                    self._held_since = None  # the previous frame's last packet: the keyframe starts where held
                    self._drain()
                return  # a duplicate, or a packet of what was already handed on or skipped
        self._behind = 0
        packets[extended] = packet
        if extended > self._highest:
            self._highest = extended
        if start is None or extended < start:
            if not is_keyframe_start(self._codec, packet):
                if len(packets) > WAITING_PACKETS:
                    packets.clear()  # no keyframe yet: keep only what could belong to the next one
                    self._highest = -1
                return
            self._start_at(extended, packets.get(extended - 1))
        self._drain()
        if len(packets) > self.max_packets:
            self._give_up()

    def tick(self) -> None:
        """Give up on a hole that waited `max_wait`; ask again for a keyframe long waited for. Called
        on the node's timer."""
        now = self._clock()
        if self._held_since is not None and now - self._held_since > START_HOLD:
            self._held_since = None  # nothing came before the keyframe's first packet we have
            self._drain()
        if self._hole_at is not None and now - self._hole_since > self.max_wait:
            self._give_up()
        if self._waiting_since is not None and self._packets and now - self._waiting_since > 2 * self.max_wait:
            self._waiting_since = now
            self._request_keyframe()  # a request, or its keyframe, may have been lost

    # --- internals ---

    def _wait_for_keyframe(self) -> None:
        self._next = None
        self._hole_at = None
        self._waiting_since = self._clock()

    def _start_at(self, seq: int, before: bytes | None) -> None:
        """Frames go on from the keyframe starting at `seq` (`before`: the packet before it, if held)."""
        packets = self._packets
        for old in [s for s in packets if s < seq]:
            del packets[old]
        self._next = self._scan = seq
        self._hole_at = None
        self._waiting_since = None
        packet = packets[seq]
        known = _opens_frame(self._codec, packet) or (before is not None and before[4:8] != packet[4:8])
        self._held_since = None if known else self._clock()

    def _earlier_part(self, extended: int, packet: bytes) -> bool:
        """An earlier first packet of the keyframe waited at (its SPS came after its IDR, say)."""
        waiting_at = self._packets.get(self._next) if self._next is not None else None
        return (
            waiting_at is not None
            and packet[4:8] == waiting_at[4:8]
            and extended not in self._packets
            and is_keyframe_start(self._codec, packet)
        )

    def _drain(self) -> None:
        packets = self._packets
        while packets and self._held_since is None and self._next is not None:
            start = self._next
            first = packets.get(start)
            if first is None:
                break
            if _carries_nothing(first):  # padding between frames (a sender probing bandwidth)
                del packets[start]
                self._next = self._scan = start + 1
                continue
            timestamp = first[4:8]
            scan = max(self._scan, start)
            end = -1
            while True:
                packet = packets.get(scan)
                if packet is None:
                    break
                if scan > start and packet[4:8] != timestamp:
                    end = scan - 1  # the next frame began without a marker on this one
                    break
                if packet[1] & 0x80:  # the marker bit ends a frame
                    end = scan
                    break
                scan += 1
            if end < 0:
                self._scan = scan
                break
            frame = [packets.pop(seq) for seq in range(start, end + 1)]
            self._next = self._scan = end + 1
            self._hand_on(frame)
        self._watch_hole()

    def _watch_hole(self) -> None:
        """Start the give-up clock at the first missing packet with others held beyond it."""
        if self._next is None:
            return
        missing = self._scan if self._next in self._packets else self._next
        if missing > self._highest or not self._packets:
            self._hole_at = None
        elif missing != self._hole_at:
            self._hole_at = missing
            self._hole_since = self._clock()

    def _hand_on(self, packets: list[bytes]) -> None:
        try:
            parts = []
            for packet in packets:
                offset = rtp_payload_offset(packet)
                if offset < 0:
                    raise ValueError("malformed RTP")
                end = len(packet) - (packet[-1] if packet[0] & 0x20 else 0)
                parts.append(self._depayload(packet[offset:end]))
            data = b"".join(parts)
        except ValueError:
            if self._video:  # nothing after a frame we cannot read decodes until a keyframe
                self.skipped_frames += 1
                self._skip(None)
            return
        timestamp = int.from_bytes(packets[0][4:8], "big")
        if self._skipping_from is not None:
            self.skipped_seconds += ((timestamp - self._skipping_from) & 0xFFFFFFFF) / self._rate
            self._skipping_from = None
        self._last_ts = timestamp
        self.frames += 1
        self._emit(data, timestamp)

    def _give_up(self) -> None:
        """The frame at `_next` will not be whole: resume at the next keyframe held (of another frame),
        or wait for one."""
        self.gaps += 1
        packets = self._packets
        after = self._next if self._next is not None else -1
        held = sorted(seq for seq in packets if seq >= after)
        broken = packets[held[0]][4:8] if held else None  # the timestamp of the frame that broke
        resume = next((seq for seq in held if packets[seq][4:8] != broken and is_keyframe_start(self._codec, packets[seq])),
                      None)
        self.skipped_frames += len({packets[seq][4:8] for seq in held if resume is None or seq < resume}) or 1
        self._skip(resume)

    def _skip(self, resume: int | None) -> None:
        if self._last_ts is not None and self._skipping_from is None:
            self._skipping_from = self._last_ts
        if resume is None:
            self._packets.clear()
            self._highest = -1
            self._wait_for_keyframe()
            self._request_keyframe()
            return
        self._start_at(resume, self._packets.get(resume - 1))
        self._drain()
