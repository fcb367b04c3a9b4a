"""One live stream's HLS: a frame sink of its room that keeps every rendition's window in memory.

Frames are queued to a worker thread (decoding and encoding never run on the event loop) that places
them on the stream's `Timeline` (sender-report timing, as the recorder does) and runs the ladder
transcoder; the parts it cuts come back to the loop, where the windows are updated and requests
waiting for them (blocking playlist reloads, preload hints) are woken. With a storage configured,
every complete segment, the init segments and a plain (non-LL) playlist are also written there, for
a bucket behind a CDN; segments that leave the window are deleted from it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from recorder.hls.ladder import Rendition, RenditionSpec
from recorder.hls.packager import Init
from recorder.hls.playlist import PlaylistOptions, RenditionWindow
from recorder.hls.transcoder import AAC_KBPS, AUDIO, LadderOptions, LadderTranscoder, Output
from recorder.priority import run_in_background
from recorder.storage import Storage, StorageError
from recorder.timeline import Timeline
from sfu.frame_sink import EncodedFrame, FrameSinks

log = logging.getLogger(__name__)
AUDIO_GROUP = "aac"

# room, rendition, H.264 access unit, the source frame's RTP timestamp, keyframe: an encoded rendition's
# frames for the SFU (server-side simulcast).
EncodedListener = Callable[[str, Rendition, bytes, int, bool], None]


class LiveHls:
    def __init__(
        self,
        room: str,
        stream: str,
        sinks: FrameSinks,
        specs: tuple[RenditionSpec, ...],
        options: LadderOptions,
        window: int = 10,
        storage: Storage | None = None,
        on_encoded: EncodedListener | None = None,
        max_queue: int = 600,
        ladder_id: str = "",
    ) -> None:
        self.room = room
        self.stream = stream
        # In every URL and storage key of this ladder: media is cached as immutable, so a ladder started
        # again for the same stream (after an idle stop) must not reuse the first one's names.
        self.ladder_id = ladder_id or stream
        self.last_active = time.monotonic()  # when a request last asked for it or finished waiting on it
        self._sinks = sinks
        self.options = options
        self.playlist_options = PlaylistOptions(math.ceil(options.segment - 1e-6), options.part_target, window)
        self._storage = storage
        self._on_encoded = on_encoded
        self._queue: queue.Queue[EncodedFrame | None] = queue.Queue(max_queue)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._work, name=f"hls-{room}", daemon=True)
        self._transcoder = LadderTranscoder(specs, options, self._emit, self._ask_keyframe,
                                            self._encoded if on_encoded is not None else None)
        self.windows: list[RenditionWindow] = []
        self._changed = asyncio.Event()
        self._persisting: set[asyncio.Task[None]] = set()
        self.started_at = 0.0
        self.dropped = 0
        self.ended = False
        self.waiting = 0  # requests blocked in `wait` (they count as viewers: the ladder keeps running)

    @property
    def key_prefix(self) -> str:
        return f"hls/{self.room}/{self.ladder_id}"

    # --- lifecycle (event loop) ---

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()
        self._sinks.add(self.room, self)
        self._sinks.request_keyframe(self.room)

    def on_frame(self, room: str, frame: EncodedFrame) -> None:
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self.dropped += 1

    async def finish(self) -> None:
        """The stream ended: write what is queued, close the last parts, end every playlist."""
        self._sinks.remove(self.room, self)
        if self._thread.is_alive():
            await asyncio.to_thread(self._queue.put, None)
            await asyncio.to_thread(self._thread.join)
        for window in self.windows:
            window.end()
        self.ended = True
        self._notify()
        if self._persisting:
            await asyncio.gather(*self._persisting, return_exceptions=True)
        await self._persist_playlists()

    def request_layer_keyframe(self) -> None:
        self._transcoder.request_layer_keyframe()

    # --- what requests wait for ---

    async def wait(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Wait until `ready()` (checked after every new part), at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        self.waiting += 1
        try:
            while not ready():
                if self.ended:
                    return ready()
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                changed = self._changed
                try:
                    await asyncio.wait_for(changed.wait(), left)
                except TimeoutError:
                    return ready()
            return True
        finally:
            self.waiting -= 1
            self.last_active = time.monotonic()

    def window(self, name: str) -> RenditionWindow | None:
        return next((w for w in self.windows if w.name == name), None)

    @property
    def ready(self) -> bool:
        tracks = len(self._transcoder.tracks)  # every track, the audio included, before any manifest
        return tracks > 0 and len(self.windows) >= tracks and all(w.ready for w in self.windows)

    @property
    def audio_window(self) -> RenditionWindow | None:
        """The audio every video rendition shares (None for a stream without audio or without video)."""
        if len(self.windows) < 2 or self.windows[-1].name != AUDIO.name:
            return None
        return self.windows[-1]

    def variants(self) -> list[tuple[RenditionWindow, int, str]]:
        """(window, peak bandwidth, codec) of each video rendition, highest first (each is played with
        `audio_window`); for an audio-only stream, its audio."""
        audio = self.audio_window
        out = []
        renditions = {r.name: r for r in self._transcoder.renditions}
        for window in self.windows:
            if window is audio:
                continue
            if window.name == AUDIO.name:
                out.append((window, self.audio_bandwidth, "mp4a.40.2"))
                continue
            rendition = renditions.get(window.name)
            init = window.current_init
            bandwidth = window.peak_bitrate
            if rendition is not None and not rendition.passthrough and rendition.kbps:
                bandwidth = max(bandwidth, rendition.kbps * 1000)
            out.append((window, max(bandwidth, 32_000), init.codec if init else ""))
        return out

    @property
    def audio_bandwidth(self) -> int:
        audio = self.window(AUDIO.name)
        return max(audio.peak_bitrate if audio is not None else 0, AAC_KBPS * 1000)

    # --- the worker thread ---

    def _work(self) -> None:
        run_in_background()  # before the codecs open: their threads inherit it
        timeline = Timeline()
        try:
            while True:
                item = self._queue.get()
                placed = timeline.flush() if item is None else timeline.push(item)
                if placed and not self.started_at and timeline.started_at is not None:
                    self.started_at = timeline.started_at
                for frame, seconds in placed:
                    self._transcoder.push(frame, seconds)
                if item is None:
                    break
            self._transcoder.finish()
        except Exception:
            log.exception("hls %s: the transcoder failed; the stream's HLS stops here", self.room)

    def _emit(self, index: int, outputs: list[Output]) -> None:
        if outputs and self._loop is not None:
            self._loop.call_soon_threadsafe(self._publish, index, outputs)

    def _ask_keyframe(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._sinks.request_keyframe, self.room)

    def _encoded(self, rendition: Rendition, data: bytes, rtp_timestamp: int, keyframe: bool) -> None:
        if self._loop is not None and self._on_encoded is not None:
            self._loop.call_soon_threadsafe(self._on_encoded, self.room, rendition, data, rtp_timestamp, keyframe)

    # --- back on the event loop ---

    def _publish(self, index: int, outputs: list[Output]) -> None:
        while len(self.windows) <= index:
            track = len(self.windows)
            options = replace(self.playlist_options, part_target=self._transcoder.part_target(track))
            self.windows.append(RenditionWindow(self._transcoder.tracks[track].name, options, self.started_at))
        window = self.windows[index]
        for item in outputs:
            if isinstance(item, Init):
                window.add_init(item)
                self._spawn_persist(f"{window.name}/init{item.version}.mp4", item.data, "video/mp4")
            else:
                evicted_before = window.segments[0].msn if window.segments else 0
                window.add_part(item)
                if item.ends_segment:
                    segment = window.segments[-1]
                    self._spawn_persist(f"{window.name}/s{segment.msn}.m4s", segment.data, "video/iso.segment")
                    gone = range(evicted_before, window.segments[0].msn)
                    if gone and self._storage is not None:
                        self._spawn(self._delete([f"{window.name}/s{m}.m4s" for m in gone]))
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # --- persistence ---

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._persisting.add(task)
        task.add_done_callback(self._persisting.discard)

    def _spawn_persist(self, name: str, data: bytes, content_type: str) -> None:
        if self._storage is not None:
            self._spawn(self._put(name, data, content_type, with_playlist=name.endswith(".m4s")))

    async def _put(self, name: str, data: bytes, content_type: str, with_playlist: bool) -> None:
        assert self._storage is not None
        try:
            await self._storage.put_bytes(f"{self.key_prefix}/{name}", data, content_type)
            if with_playlist:
                await self._persist_playlists()
        except StorageError as exc:
            log.warning("hls %s: %s not stored: %s", self.room, name, exc)

    async def _delete(self, names: list[str]) -> None:
        assert self._storage is not None
        for name in names:
            try:
                await self._storage.delete(f"{self.key_prefix}/{name}")
            except StorageError as exc:
                log.warning("hls %s: %s not deleted: %s", self.room, name, exc)

    async def _persist_playlists(self) -> None:
        """Plain HLS playlists (full segments only) for players reading from the bucket."""
        if self._storage is None or not self.windows:
            return
        try:
            for window in self.windows:
                text = plain_playlist(window)
                await self._storage.put_bytes(f"{self.key_prefix}/{window.name}/index.m3u8", text.encode(),
                                              "application/vnd.apple.mpegurl")
            await self._storage.put_bytes(f"{self.key_prefix}/index.m3u8", multivariant(self).encode(),
                                          "application/vnd.apple.mpegurl")
        except StorageError as exc:
            log.warning("hls %s: playlists not stored: %s", self.room, exc)


def plain_playlist(window: RenditionWindow) -> str:
    """The window as plain HLS: complete segments only, no parts or server control."""
    o = window.options
    complete = [s for s in window.segments if s.complete]
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{o.target_duration}",
             f"#EXT-X-MEDIA-SEQUENCE:{complete[0].msn if complete else 0}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    map_version = None
    for segment in complete:
        if segment.init != map_version:
            map_version = segment.init
            lines.append(f'#EXT-X-MAP:URI="init{map_version}.mp4"')
        lines.append(f"#EXTINF:{segment.duration:.5f},")
        lines.append(f"s{segment.msn}.m4s")
    if window.ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def multivariant(live: LiveHls, prefix: str = "") -> str:
    """The multivariant playlist: one variant per video rendition, highest first, all with the one
    audio rendition (an audio group); an audio-only stream's one variant is its audio."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-INDEPENDENT-SEGMENTS"]
    audio = live.audio_window
    if audio is not None:
        lines.append(f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{AUDIO_GROUP}",NAME="Audio",DEFAULT=YES,AUTOSELECT=YES,'
                     f'CHANNELS="2",URI="{prefix}{audio.name}/index.m3u8"')
    for window, bandwidth, codec in live.variants():
        codecs = ",".join(c for c in (codec, "mp4a.40.2" if audio is not None else "") if c)
        attributes = [f"BANDWIDTH={bandwidth + (live.audio_bandwidth if audio is not None else 0)}"]
        init = window.current_init
        if init is not None and init.width:
            attributes.append(f"RESOLUTION={init.width}x{init.height}")
        if codecs:
            attributes.append(f'CODECS="{codecs}"')
        if audio is not None:
            attributes.append(f'AUDIO="{AUDIO_GROUP}"')
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attributes))
        lines.append(f"{prefix}{window.name}/index.m3u8")
    return "\n".join(lines) + "\n"
