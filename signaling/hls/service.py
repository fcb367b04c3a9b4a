"""HLS for every live stream of this node: starts each stream's ladder and finds it for requests.

A watcher of the stream service: when a stream starts here, its `LiveHls` joins the room as a frame
sink; when it ends, its playlists get `EXT-X-ENDLIST` and stay served for `linger` seconds, so
players finish what they buffered and see the end instead of an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from recorder.hls.ladder import RenditionSpec
from recorder.hls.live import EncodedListener, LiveHls
from recorder.hls.transcoder import LadderOptions
from recorder.storage import Storage
from sfu.frame_sink import FrameSinks

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
    ) -> None:
        self._sinks = sinks
        self.specs = specs
        self.options = options
        self._window = window
        self._storage = storage
        self._linger = linger
        self._streams: dict[str, LiveHls] = {}
        self._ending: set[asyncio.Task[None]] = set()
        # Set by the composition root: encoded renditions go to the SFU as WebRTC layers.
        self.on_encoded: EncodedListener | None = None
        self.on_stream: Callable[[str, LiveHls | None], None] = lambda room, live: None

    def live(self, room: str) -> LiveHls | None:
        return self._streams.get(room)

    async def stream_started(self, room: str, stream: str) -> None:
        old = self._streams.get(room)
        if old is not None and not old.ended:
            await old.finish()
        live = LiveHls(room, stream, self._sinks, self.specs, self.options, self._window, self._storage,
                       self.on_encoded)
        self._streams[room] = live
        live.start()
        self.on_stream(room, live)

    async def stream_ended(self, room: str, stream: str) -> None:
        live = self._streams.get(room)
        if live is None or live.stream != stream:
            return
        self.on_stream(room, None)
        await live.finish()
        task = asyncio.create_task(self._forget(room, live), name=f"hls-linger-{room}")
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def _forget(self, room: str, live: LiveHls) -> None:
        await asyncio.sleep(self._linger)
        if self._streams.get(room) is live:
            del self._streams[room]

    async def close(self) -> None:
        for task in list(self._ending):
            task.cancel()
        await asyncio.gather(*self._ending, return_exceptions=True)
        for live in list(self._streams.values()):
            if not live.ended:
                await live.finish()
        self._streams.clear()
