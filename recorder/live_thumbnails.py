"""A picture of every live stream for the directory, refreshed every few seconds.

A frame sink that keeps only the latest video keyframe of each live room (no decoder runs per
stream); every `interval` seconds the fresh ones are decoded once in a worker thread, made a small
JPEG and stored at `live/{room}.jpg`. Publishers send keyframes only when asked, so a room whose
last keyframe is older than the interval is asked for one.
"""

from __future__ import annotations

import asyncio
import logging
import time

from lifecycle.tasks import stop
from recorder.mp4 import decode_keyframe, jpeg
from recorder.storage import Storage, StorageError
from sfu.frame_sink import EncodedFrame, FrameSinks

log = logging.getLogger(__name__)


def live_key(room: str) -> str:
    return f"live/{room}.jpg"


class LiveThumbnails:
    def __init__(self, sinks: FrameSinks, storage: Storage, interval: float = 10.0) -> None:
        self._sinks = sinks
        self._storage = storage
        self.interval = interval
        self._latest: dict[str, EncodedFrame] = {}
        self._made: dict[str, float] = {}  # room -> received_at of the keyframe last made into a picture
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def on_frame(self, room: str, frame: EncodedFrame) -> None:
        if frame.keyframe:
            self._latest[room] = frame

    def watch(self, room: str) -> None:
        self._sinks.add(room, self)
        self._sinks.request_keyframe(room)

    async def unwatch(self, room: str) -> None:
        self._sinks.remove(room, self)
        self._latest.pop(room, None)
        self._made.pop(room, None)
        try:
            await self._storage.delete(live_key(room))
        except StorageError as exc:
            log.warning("could not remove the live thumbnail of %s: %s", room, exc)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._refresh_forever(), name="live-thumbnails")

    async def close(self) -> None:
        self._closed = True
        await stop([self._task], "the live thumbnails")
        self._task = None

    async def _refresh_forever(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception:  # one bad turn must not end the pictures for every stream after it
                log.exception("could not refresh the live thumbnails")

    async def refresh(self) -> int:
        """Store a new picture for each room with a fresh keyframe; the number stored."""
        made = 0
        now = time.time()
        for room, frame in list(self._latest.items()):
            if now - frame.received_at >= self.interval:
                self._sinks.request_keyframe(room)
            if self._made.get(room) == frame.received_at:
                continue
            picture = await asyncio.to_thread(_picture, frame)
            if picture is None or room not in self._latest:  # or the stream ended meanwhile
                continue
            try:
                await self._storage.put_bytes(live_key(room), picture, "image/jpeg")
            except StorageError as exc:
                log.warning("could not store the live thumbnail of %s: %s", room, exc)
                continue
            self._made[room] = frame.received_at
            made += 1
        return made



def _picture(frame: EncodedFrame) -> bytes | None:
    picture = decode_keyframe(frame.codec, frame.data)
    return None if picture is None else jpeg(picture)
