"""Server-side simulcast: the HLS ladder's encoded renditions offered back to WebRTC viewers as layers.

aiortc has no simulcast, and a browser publisher sends one encoding. The HLS transcoder encodes the
ladder anyway (constrained baseline H.264, every frame at the source's RTP timestamp), so each encoded
rendition becomes a `LayerFeed` of the room: a feed like the publisher's, whose packets are cut here
from the rendition's frames. A viewer's down track moves between the source feed and the layers on a
keyframe of the target (asked for when the move is decided), so the picture never breaks; sequence
numbers stay continuous, and since every layer shares the source's timestamps and sender-report
mapping, lip sync holds across a switch.

`LayerPolicy` decides from the viewer's receiver reports: sustained loss moves it one layer down,
a long clean stretch one layer up.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable

from sfu import aiortc_internals as internals
from sfu.feed import Feed
from sfu.media_format import MediaFormat

_HEADER = struct.Struct("!BBHII")
_LAYER_PAYLOAD_TYPE = 96  # rewritten to each viewer's own payload type on the way out


class _LayerUpstream:
    """Keyframe requests for a layer go to its encoder; there is nothing to NACK (no network before it)."""

    def __init__(self, ask_keyframe: Callable[[], None]) -> None:
        self._ask = ask_keyframe

    async def request_keyframe(self, media_ssrc: int) -> None:
        self._ask()

    async def nack(self, media_ssrc: int, lost: list[int]) -> None:
        return None


class LayerFeed(Feed):
    def __init__(self, name: str, height: int, source: Feed, ask_keyframe: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(source.format, clock)
        self.name = name
        self.height = height
        self.source = source
        self._ssrc = random.getrandbits(32) or 1
        self._seq = random.getrandbits(16)
        self.attach(_LayerUpstream(ask_keyframe), self._ssrc)

    def on_encoded(self, annex_b: bytes, rtp_timestamp: int) -> None:
        """One encoded frame of the rendition, stamped with the source frame's RTP timestamp."""
        self.mapping = self.source.mapping
        payloads = internals.h264_payloads(annex_b)
        last = len(payloads) - 1
        for i, payload in enumerate(payloads):
            self._seq = (self._seq + 1) & 0xFFFF
            marker = 0x80 if i == last else 0
            self.on_rtp(_HEADER.pack(0x80, marker | _LAYER_PAYLOAD_TYPE, self._seq, rtp_timestamp, self._ssrc) + payload)


def can_layer(source: MediaFormat) -> bool:
    """Layers are H.264: only viewers of an H.264 source negotiated a codec that can take them."""
    return source.kind == "video" and source.codec == "H264"


class LayerPolicy:
    """Moves a viewer down a layer after `down_after` consecutive lossy reports (more than `high`
    lost), and up one after `up_after` seconds without a report above `low`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, high: float = 0.08, low: float = 0.02,
                 down_after: int = 2, up_after: float = 10.0) -> None:
        self._clock = clock
        self.high = high
        self.low = low
        self.down_after = down_after
        self.up_after = up_after
        self._lossy = 0
        self._clean_since = clock()

    def on_loss(self, fraction: float) -> int:
        """-1: move down a layer, +1: up a layer, 0: stay."""
        now = self._clock()
        if fraction > self.high:
            self._lossy += 1
            self._clean_since = now
            if self._lossy >= self.down_after:
                self._lossy = 0
                return -1
            return 0
        self._lossy = 0
        if fraction > self.low:
            self._clean_since = now
        elif now - self._clean_since >= self.up_after:
            self._clean_since = now
            return 1
        return 0
