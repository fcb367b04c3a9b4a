"""The encoded-frame sink interface: depacketised frames of a room's tracks, for in-process consumers.

The recorder and the HLS transcoder are such consumers, like any participant of the room. Frames are
what the publisher encoded (an `av.Packet` with its RTP timestamp as pts), never decoded pictures.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from aiortc.mediastreams import MediaStreamError

log = logging.getLogger(__name__)


class FrameSink(Protocol):
    def on_frame(self, room: str, kind: str, frame: Any) -> None:
        """One encoded frame (an `av.Packet`); must not block."""


class FrameSinks:
    """The sinks of a node; rooms without a sink still drain their tracks so nothing piles up."""

    def __init__(self) -> None:
        self._sinks: dict[str, list[FrameSink]] = {}
        self.frames = 0

    def add(self, room: str, sink: FrameSink) -> None:
        self._sinks.setdefault(room, []).append(sink)

    def remove(self, room: str, sink: FrameSink) -> None:
        sinks = self._sinks.get(room, [])
        if sink in sinks:
            sinks.remove(sink)

    async def drain(self, room: str, track: Any) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames += 1
            for sink in self._sinks.get(room, ()):
                try:
                    sink.on_frame(room, track.kind, frame)
                except Exception:
                    log.exception("frame sink %r failed", sink)
