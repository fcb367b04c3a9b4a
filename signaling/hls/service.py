"""HLS for the live streams of this node: starts a stream's ladder and finds it for requests.

A watcher of the stream service. The ladder costs a fifth of a core per 720p stream, so by default it
runs on demand: it starts with the first HLS request for the channel
and stops after `idle` seconds without HLS requests; with `always` (set when segments
are persisted for a CDN bucket) it runs for every stream from its start. When a stream ends, its
playlists get `EXT-X-ENDLIST` and stay served for `linger` seconds, so players finish what they
buffered and see the end instead of an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from lifecycle.tasks import stop
from recorder.hls.ladder import RenditionSpec
from recorder.hls.live import EncodedListener, LiveHls
from recorder.hls.transcoder import LadderOptions
from recorder.storage import Storage
from sfu.frame_sink import FrameSinks
from signaling.errors import Unavailable

log = logging.getLogger(__name__)


class HlsService:
    def __init__(
        self,
        sinks: FrameSinks,
        specs: tuple[RenditionSpec, ...],
        options: LadderOptions,
        window: int,
        storage: Storage | None,
        linger: float = 60.0,
        always: bool = False,
        idle: float = 60.0,
        max_ladders: int = 4,
    ) -> None:
        self._sinks = sinks
        self.specs = specs
        self.options = options
        self._window = window
        self._storage = storage
        self._linger = linger
        self._always = always
        self._idle = idle
        self.max_ladders = max_ladders
        self._live_streams: dict[str, str] = {}  # room -> stream id, for every stream live here
        self._ladders_started: dict[str, int] = {}  # stream id -> ladders started for it (on demand: again after idle)
        self._streams: dict[str, LiveHls] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._ending: set[asyncio.Task[None]] = set()
        # Set by the composition root: encoded renditions go to the SFU as WebRTC layers...
        self.on_encoded: EncodedListener | None = None
        # ...and when a ladder stops, its layers' viewers go back to the source.
        self.on_stopped: Callable[[str, str], None] = lambda room, stream: None

    @property
    def running(self) -> int:
        """Ladders encoding now."""
        return sum(1 for live in self._streams.values() if not live.ended)

    def live(self, room: str) -> LiveHls | None:
        return self._streams.get(room)

    def serves(self, room: str) -> bool:
        """Is `room` live here, or its ended ladder still served (its playlists linger)?"""
        return room in self._live_streams or room in self._streams

    def channels(self) -> tuple[str, ...]:
        """The rooms whose HLS this node serves (see `serves`)."""
        return tuple(sorted(set(self._live_streams) | set(self._streams)))

    def ensure(self, room: str) -> LiveHls | None:
        """The room's HLS, started now if the room is live here and its ladder is not running; 503 when
        this node already runs `max_ladders` (each costs a share of a core, taken from forwarding)."""
        live = self._streams.get(room)
        stream = self._live_streams.get(room)
        if stream is None or (live is not None and live.stream == stream):
            if live is not None:
                live.last_active = time.monotonic()
            return live
        replacing = live is not None and not live.ended
        if not replacing and self.running >= self.max_ladders:
            raise Unavailable(f"this node runs its maximum of {self.max_ladders} HLS ladders; watch over WebRTC or "
                              "try again later", retry_after=30, headers={"Cache-Control": "no-store"})
        if live is not None and replacing:
            self._spawn(self._finish(live), f"hls-replace-{room}")
        started = self._ladders_started.get(stream, 0)
        self._ladders_started[stream] = started + 1
        live = LiveHls(room, stream, self._sinks, self.specs, self.options, self._window, self._storage,
                       self.on_encoded, ladder_id=f"{stream}-{started}" if started else stream)
        self._streams[room] = live
        live.start()
        if self._sweeper is None and not self._always:
            self._sweeper = asyncio.create_task(self._stop_idle_forever(), name="hls-idle")
        return live

    async def stream_started(self, room: str, stream: str) -> None:
        self._live_streams[room] = stream
        if self._always:
            try:
                self.ensure(room)
            except Unavailable:
                log.warning("hls %s: not started, this node already runs %d ladders", room, self.max_ladders)

    async def _stop_idle_forever(self) -> None:
        while True:
            await asyncio.sleep(min(10.0, self._idle / 2))
            now = time.monotonic()
            for room, live in list(self._streams.items()):
                if not live.ended and not live.waiting and now - live.last_active > self._idle:
                    log.info("hls %s: no HLS viewers for %.0f s, the ladder stops", room, self._idle)
                    await self._finish(live)
                    if self._streams.get(room) is live:
                        del self._streams[room]

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def stream_ended(self, room: str, stream: str) -> None:
        if self._live_streams.get(room) == stream:
            del self._live_streams[room]
        self._ladders_started.pop(stream, None)
        live = self._streams.get(room)
        if live is None or live.stream != stream:
            return
        await self._finish(live)
        self._spawn(self._forget(room, live), f"hls-linger-{room}")

    async def _forget(self, room: str, live: LiveHls) -> None:
        await asyncio.sleep(self._linger)
        if self._streams.get(room) is live:
            del self._streams[room]

    async def close(self) -> None:
        await stop([self._sweeper, *self._ending], "the HLS service's tasks")  # (the sweeper stays: none starts again)
        for live in list(self._streams.values()):
            if not live.ended:
                await self._finish(live)
        self._streams.clear()

    async def _finish(self, live: LiveHls) -> None:
        await live.finish()
        self.on_stopped(live.room, live.stream)
