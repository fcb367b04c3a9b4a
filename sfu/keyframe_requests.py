"""Keyframe requests (PLI/FIR) from subscribers, coalesced into few upstream requests.

A thousand viewers joining at once, or each reporting the same loss, must cause one request to the
publisher, not a thousand: encoders answer every request with a large keyframe, and a storm of them
starves the link. At most one request goes upstream per `min_interval`; requests in between are
remembered and sent when the interval ends, unless a keyframe arrived meanwhile. A request that gets
no keyframe within `retry_after` (the PLI was lost) is sent again.
"""

from __future__ import annotations

from collections.abc import Callable


class KeyframeRequests:
    __slots__ = ("_clock", "min_interval", "retry_after", "_last_sent", "_pending", "_awaiting",
                 "requested", "sent")

    def __init__(self, clock: Callable[[], float], min_interval: float = 0.5, retry_after: float = 1.0) -> None:
        self._clock = clock
        self.min_interval = min_interval
        self.retry_after = retry_after
        self._last_sent = float("-inf")
        self._pending = False  # someone asked and nothing was sent for it yet
        self._awaiting = False  # a request went out and no keyframe has come since
        self.requested = 0
        self.sent = 0

    def request(self) -> bool:
        """A subscriber wants a keyframe. True: send one upstream now."""
        self.requested += 1
        if self._clock() - self._last_sent >= self.min_interval:
            return self._send()
        self._pending = True
        return False

    def keyframe_arrived(self) -> None:
        self._pending = False
        self._awaiting = False

    def due(self) -> bool:
        """Call on a timer (every ~100 ms). True: send a remembered or repeated request upstream now."""
        since = self._clock() - self._last_sent
        if (self._pending and since >= self.min_interval) or (self._awaiting and since >= self.retry_after):
            return self._send()
        return False

    def _send(self) -> bool:
        self._last_sent = self._clock()
        self._pending = False
        self._awaiting = True
        self.sent += 1
        return True
