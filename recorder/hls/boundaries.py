"""Where segments start, decided once for the whole ladder.

When the source is encoded here, a segment starts every `segment` seconds on the dot: the encoders
are forced to a keyframe there. When the source's H.264 is passed through, a segment can only start
at one of the publisher's keyframes, so the publisher is asked for one just in time: `lead` before
the segment is due, `lead` being how long the publisher has lately taken to answer (a browser
answers a PLI in one or two frames on a good link, more on a slow one). Any keyframe from `lead`
before the segment is due starts the next one (the answer, or one the publisher made by itself, which
saves asking for a second keyframe right after it); a request that goes unanswered is
repeated, so a lost PLI costs one segment a second more, not a segment as long as the publisher's own
keyframe interval (tens of seconds for Chromium).

Frames reach the ladder's worker late when it falls behind (a busy machine), and the publisher
answers a request in real time, not in the worker's: so the request is timed from the stream's live
edge (the frame being handled plus how long it waited, `lag`), and the answer time is learnt the same
way. Timed from the frame being handled, a worker that caught up after lagging asked too early by
what it had lagged, and cut segments short by as much.

Segments are due on a fixed grid of the stream's time (every `segment` from time 0), not `segment`
after the last cut, so they never drift from the wall clock: LL-DASH players compute a segment's
number from the clock. A segment's `slot` is the grid point it starts nearest to, its DASH number; a
segment that had to run long (an unanswered request) leaves a slot out rather than shift the rest.
"""

from __future__ import annotations

from collections.abc import Callable


class SegmentBoundaries:
    __slots__ = ("segment", "slot", "_ask", "_passthrough", "_tolerance", "_retry", "_lead", "_min_lead", "_max_lead",
                 "_due", "_asked_at", "_started")

    def __init__(self, segment: int, timescale: int, passthrough: bool, ask_keyframe: Callable[[], None]) -> None:
        self.segment = segment  # in ticks of `timescale`
        self._ask = ask_keyframe
        self._passthrough = passthrough
        self._tolerance = timescale // 60  # a frame's worth of rounding in the source's timing
        self._retry = timescale  # ask again when a request goes unanswered this long
        self._max_lead = min(timescale // 2, segment // 3)  # a keyframe asked for stays nearer its own slot
        self._lead = min(timescale * 3 // 10, self._max_lead)
        self._min_lead = min(timescale // 30, self._max_lead)
        self.slot = -1  # of the segment started last: the grid point it started nearest to
        self._due = 0  # when the next segment is due, in ticks of stream time
        self._asked_at: int | None = None  # stream time of the live edge at the request in flight
        self._started = False

    def video_frame(self, pts: int, keyframe: bool, lag: int = 0) -> bool:
        """One source video frame, in time order, handled `lag` ticks after it arrived. True: a
        segment starts with this frame."""
        if not self._started:
            self._started = True
            return self._cut(pts)
        if not self._passthrough:
            return pts >= self._due - self._tolerance and self._cut(pts)
        asked_at = self._asked_at
        if keyframe and pts >= self._due - self._lead:  # asked for, or the publisher's own: either will do
            if asked_at is not None:  # learn how long the publisher takes to answer (it arrived at `pts`)
                answered = pts - asked_at
                self._lead = min(self._max_lead, max(self._min_lead, self._lead + (answered - self._lead) // 4))
            return self._cut(pts)
        live = pts + max(0, lag)  # where the stream is now
        if asked_at is None:
            if live >= self._due - self._lead:
                self._asked_at = live
                self._ask()
        elif live - asked_at >= self._retry:
            self._asked_at = live
            self._ask()
        return False

    def _cut(self, pts: int) -> bool:
        self.slot = max(grid_slot(pts, self.segment), self.slot + 1)  # never a slot twice
        self._due = (self.slot + 1) * self.segment
        self._asked_at = None
        return True


def grid_slot(time: int, segment: int) -> int:
    """The grid point `time` is nearest to (a segment starting half a segment late takes the next)."""
    return max(0, (2 * time + segment) // (2 * segment))
