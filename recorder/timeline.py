"""One time axis for a recording's audio and video, from RTP timestamps and RTCP sender reports.

Within one publisher connection (an *epoch*) a frame's time is its capture time on the publisher's
clock, which its sender reports map RTP timestamps of both tracks to; so audio and video stay in sync
however differently they were delayed on the way. The recording starts at the first video keyframe
(audio before it is dropped, so both start together); frames wait, up to `hold` seconds, until every
track of the epoch has a sender report. A track that never sends one is placed by arrival time,
shifted by the offset the reporting tracks show between the two clocks.

A new publisher connection (a reconnect, or another device taking over) starts a new epoch at the
server time it arrived: the gap stays a gap in the recording, at its real length, neither closed up
nor smeared over the frames around it. Frames of a replaced connection that arrive late are dropped.
Times never go backwards within a track.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from sfu.frame_sink import EncodedFrame
from sfu.sender_reports import ClockMapping

MIN_STEP = 0.001  # seconds; later frames of a track are at least this much later
EPOCH_GAP = 0.040  # a new epoch starts at least this long after everything already written
REPORT_WINDOW = 10.0  # seconds of a track's sender reports the least late one is taken from
RESYNC = 0.05  # seconds a track's best report must disagree with the one its frames follow to replace it
REBASE = 1 << 29  # RTP ticks from a followed report's timestamp before it is carried forward (99 min at 90 kHz)
UNRELATED = 5.0  # seconds: a report this far from the others maps another RTP timeline (a new SSRC)


class _Reports:
    """One track's sender reports, filtered. A report maps an RTP timestamp to the time it was sent,
    which is never before that media was captured and often after it (aiortc stamps a report when it
    goes out: up to a frame late, more when its loop is busy). Of the reports of the last
    `REPORT_WINDOW` seconds, the one that puts the media earliest is the truest; the window lets a real
    change of the sender's clock through."""

    __slots__ = ("_seen", "_last", "best")

    def __init__(self) -> None:
        self._seen: deque[ClockMapping] = deque()
        self._last: ClockMapping | None = None
        self.best: ClockMapping | None = None

    def add(self, mapping: ClockMapping) -> ClockMapping:
        """Take `mapping` (again, as every frame carries its track's latest); the best report now."""
        if mapping is not self._last:
            self._last = mapping
            seen = self._seen
            if any(m is mapping for m in seen):
                pass  # a frame from before a later report (frames wait while a recording anchors)
            elif seen and abs(_sender_at(seen[-1], mapping.rtp_timestamp) - mapping.ntp_seconds) > UNRELATED:
                seen.clear()  # another RTP timeline (the publisher's new SSRC): the old reports mean nothing here
                seen.append(mapping)
            else:
                seen.append(mapping)
            while seen[0].received_at < mapping.received_at - REPORT_WINDOW:
                seen.popleft()
            newest = seen[-1]
            self.best = min(seen, key=lambda m: _sender_at(m, newest.rtp_timestamp))
        assert self.best is not None
        return self.best


def _ticks(a: int, b: int) -> int:
    """How far apart two RTP timestamps are, either way round (modulo 2**32)."""
    delta = (b - a) & 0xFFFFFFFF
    return min(delta, 0x100000000 - delta)


def _sender_at(mapping: ClockMapping, rtp_timestamp: int) -> float:
    delta = (rtp_timestamp - mapping.rtp_timestamp) & 0xFFFFFFFF
    if delta >= 0x80000000:
        delta -= 0x100000000
    return mapping.ntp_seconds + delta / mapping.clock_rate


@dataclass(slots=True)
class _Epoch:
    source: str
    kinds: tuple[str, ...]
    pending: list[EncodedFrame] = field(default_factory=list)
    reports: dict[str, _Reports] = field(default_factory=dict)  # by kind
    followed: dict[str, ClockMapping] = field(default_factory=dict)  # the report each track's frames are placed by
    followed_from: dict[str, ClockMapping] = field(default_factory=dict)  # ...as it came (before carried forward)
    anchored: bool = False
    start_sender: float = 0.0  # sender time at this epoch's first frame
    offset: float = 0.0  # recording time of that frame
    clock_offset: float = 0.0  # server wall clock minus sender clock, for tracks without reports


class Timeline:
    def __init__(self, hold: float = 3.0) -> None:
        self.hold = hold
        self.started_at: float | None = None  # server wall clock at recording time 0
        self._epoch: _Epoch | None = None
        self._retired: set[str] = set()
        self._last: dict[str, float] = {}
        self.dropped = 0

    @property
    def end(self) -> float:
        return max(self._last.values(), default=0.0)

    def push(self, frame: EncodedFrame) -> list[tuple[EncodedFrame, float]]:
        """The frames that can now be written, with their times in seconds (in order per track)."""
        epoch = self._epoch
        if epoch is None or frame.source != epoch.source:
            if frame.source in self._retired:
                self.dropped += 1
                return []
            if epoch is not None:
                self._retired.add(epoch.source)
            epoch = self._epoch = _Epoch(frame.source, frame.kinds)
        if epoch.anchored:
            return self._place(epoch, [frame])
        epoch.pending.append(frame)
        return self._try_anchor(epoch, force=False)

    def flush(self) -> list[tuple[EncodedFrame, float]]:
        """At the end: place whatever still waits, reports or not."""
        epoch = self._epoch
        if epoch is None or epoch.anchored:
            return []
        return self._try_anchor(epoch, force=True)

    def _try_anchor(self, epoch: _Epoch, force: bool) -> list[tuple[EncodedFrame, float]]:
        pending = epoch.pending
        if "video" in epoch.kinds:
            first_key = next((i for i, f in enumerate(pending) if f.kind == "video" and f.keyframe), None)
            if first_key is None:
                # Nothing can start before a keyframe; keep only what is recent enough to matter.
                horizon = pending[-1].received_at - self.hold
                recent = [f for f in pending if f.received_at >= horizon]
                self.dropped += len(pending) - len(recent)
                epoch.pending = recent
                return []
        for f in pending:  # every report that came so far, to choose the truest from
            self._report(epoch, f)
        epoch.followed = {kind: reports.best for kind, reports in epoch.reports.items() if reports.best is not None}
        epoch.followed_from = dict(epoch.followed)
        mappings = {f.kind: self._report(epoch, f) for f in pending if f.mapping is not None}
        waited = pending[-1].received_at - pending[0].received_at
        if not force and set(mappings) != set(epoch.kinds) and waited < self.hold:
            return []
        # Sender times: a track's latest report places all its frames, earlier ones included.
        offsets = []
        for f in pending:
            sender = f.sender_time(mappings.get(f.kind))
            if sender is not None:
                offsets.append(f.received_at - sender)
        epoch.clock_offset = min(offsets) if offsets else 0.0  # the least delayed frame is the best estimate
        timed = [(f, self._sender(epoch, f, mappings.get(f.kind))) for f in pending]
        if "video" in epoch.kinds:
            start_frame, start = next((f, t) for f, t in timed if f.kind == "video" and f.keyframe)
        else:
            start_frame, start = timed[0]
        kept = [
            (f, t)
            for f, t in timed
            if t >= start - MIN_STEP and not (f.kind == "video" and f.received_at < start_frame.received_at)
        ]
        self.dropped += len(timed) - len(kept)
        epoch.start_sender = start
        if self.started_at is None:
            self.started_at = start_frame.received_at
            epoch.offset = 0.0
        else:
            epoch.offset = max(start_frame.received_at - self.started_at, self.end + EPOCH_GAP)
        epoch.anchored = True
        epoch.pending = []
        return [(f, self._monotonic(f.kind, epoch.offset + t - start)) for f, t in kept]

    def _place(self, epoch: _Epoch, frames: list[EncodedFrame]) -> list[tuple[EncodedFrame, float]]:
        return [(f, self._monotonic(f.kind, epoch.offset + self._sender(epoch, f, self._report(epoch, f))
                                    - epoch.start_sender)) for f in frames]

    @staticmethod
    def _report(epoch: _Epoch, frame: EncodedFrame) -> ClockMapping | None:
        """The sender report the frame's track is placed by: one report for as long as it holds, so
        the frames keep their RTP spacing exactly (taking each new report as it came moved the frames
        after it by that report's own lateness: they bunched and juddered, two frames 1 ms apart, then
        a gap). It changes only when the track's truest report (`_Reports`) disagrees by more than
        `RESYNC` (the sender's clock jumped, or drifted that far: 50 ms is 17 min at 50 ppm)."""
        if frame.mapping is None:
            return None
        reports = epoch.reports.get(frame.kind)
        if reports is None:
            reports = epoch.reports[frame.kind] = _Reports()
        best = reports.add(frame.mapping)
        followed = epoch.followed.get(frame.kind)
        if followed is None or (best is not epoch.followed_from.get(frame.kind)
                                and abs(_sender_at(followed, best.rtp_timestamp) - best.ntp_seconds) > RESYNC):
            followed = epoch.followed[frame.kind] = epoch.followed_from[frame.kind] = best
        if _ticks(followed.rtp_timestamp, frame.rtp_timestamp) > REBASE:
            # The same mapping, from a timestamp near this frame's: RTP differences are read as signed
            # 32-bit numbers, which would wrap 6.6 h (at 90 kHz) past the report.
            followed = epoch.followed[frame.kind] = ClockMapping(
                _sender_at(followed, frame.rtp_timestamp), frame.rtp_timestamp, followed.clock_rate, followed.received_at)
        return followed

    @staticmethod
    def _sender(epoch: _Epoch, frame: EncodedFrame, mapping: ClockMapping | None = None) -> float:
        """The frame's capture time on the publisher's clock: from its track's report (`mapping`, a
        later one than the frame carries), else by arrival shifted by the epoch's clock offset."""
        sender = frame.sender_time(mapping)
        return frame.received_at - epoch.clock_offset if sender is None else sender

    def _monotonic(self, kind: str, t: float) -> float:
        last = self._last.get(kind)
        if last is not None and t < last + MIN_STEP:
            t = last + MIN_STEP
        self._last[kind] = t
        return t

