"""One recording in progress, and turning a spool into the recording people play.

A `Recording` is a frame sink of its room. Frames are queued to a worker thread (the event loop never
waits on disk or a codec) that places them on the `Timeline`, re-encodes VP8 to H.264 when needed and
writes the fragmented MP4 spool. While it grows, the spool is streamed to storage as a multipart
upload (`…/live.mp4`), so most of a recording is already off the host when the stream ends. The
recording asks the publisher for a keyframe every few seconds so the result can be seeked.

`finalize` makes the faststart MP4 and the thumbnail from a spool, whether the recording stopped or
its process was killed, uploads them (streamed), and removes the spool.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

from lifecycle.tasks import stop
from recorder.mp4 import OPUS, VIDEO_RATE, AudioFormat, FragmentedMp4, MediaInfo, finalize, picture_size, thumbnail
from recorder.priority import run_in_background
from recorder.storage import Storage, StorageError, Upload, put_file
from recorder.timeline import Timeline
from recorder.transcode import Vp8ToH264
from sfu.frame_sink import EncodedFrame, FrameSinks

log = logging.getLogger(__name__)

SPOOL = "spool.mp4"
LIVE_OBJECT = "live.mp4"
MEDIA_OBJECT = "recording.mp4"
THUMBNAIL_OBJECT = "thumbnail.jpg"
UPLOAD_CHUNK = 4 * 1024 * 1024
MAX_WAITING = 300  # frames placed while the writer waits to learn the audio's format


@dataclass(frozen=True, slots=True)
class RecordingOptions:
    keyframe_interval: float = 2.0  # seconds between keyframe requests, so playback can seek
    fragment: float = 1.0  # seconds per MP4 fragment: at most this much is lost to a crash
    upload_interval: float = 2.0  # seconds between pushes of the growing spool to storage
    max_queue: int = 3000  # frames (about 30 s) the writer may fall behind before frames are dropped


class Recording:
    def __init__(
        self, room: str, folder: Path, storage: Storage, key_prefix: str, sinks: FrameSinks, options: RecordingOptions
    ) -> None:
        self.room = room
        self.folder = folder
        self.key_prefix = key_prefix
        self._storage = storage
        self._sinks = sinks
        self._options = options
        self._queue: queue.Queue[EncodedFrame | None] = queue.Queue(options.max_queue)
        self._thread = threading.Thread(target=self._work, name=f"recording-{room}", daemon=True)
        self._tasks: list[asyncio.Task[None]] = []
        self._upload: Upload | None = None
        self._uploaded = 0
        self.dropped = 0
        self.codec_errors = 0

    @property
    def backlog(self) -> int:
        """Frames queued for the writer."""
        return self._queue.qsize()

    @property
    def spool(self) -> Path:
        return self.folder / SPOOL

    async def start(self) -> None:
        await asyncio.to_thread(self.folder.mkdir, parents=True, exist_ok=True)
        self._upload = self._storage.open_upload(f"{self.key_prefix}/{LIVE_OBJECT}", "video/mp4")
        self._thread.start()
        self._sinks.add(self.room, self)
        self._sinks.request_keyframe(self.room)
        self._tasks = [asyncio.create_task(self._ask_keyframes()), asyncio.create_task(self._upload_forever())]

    def on_frame(self, room: str, frame: EncodedFrame) -> None:
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self.dropped += 1

    async def stop(self) -> None:
        """Stop taking frames, write what is queued, and finish the live upload. Idempotent."""
        self._sinks.remove(self.room, self)
        await stop(self._tasks, f"the recording of {self.room}")
        self._tasks = []
        if self._thread.is_alive():
            await asyncio.to_thread(self._queue.put, None)
            await asyncio.to_thread(self._thread.join)
        await self._push_spool()
        upload, self._upload = self._upload, None
        if upload is not None:
            try:
                await upload.complete()
            except StorageError as exc:
                log.warning("recording %s: live copy not completed (%s); the final upload follows", self.room, exc)
                await upload.abort()

    # --- the event loop side ---

    async def _ask_keyframes(self) -> None:
        while True:
            await asyncio.sleep(self._options.keyframe_interval)
            self._sinks.request_keyframe(self.room)

    async def _upload_forever(self) -> None:
        while True:
            await asyncio.sleep(self._options.upload_interval)
            await self._push_spool()

    async def _push_spool(self) -> None:
        upload = self._upload
        if upload is None:
            return
        try:
            while chunk := await asyncio.to_thread(self._read_spool, self._uploaded):
                await upload.write(chunk)  # a few MiB at a time, however far behind it is
                self._uploaded += len(chunk)
        except (OSError, StorageError) as exc:
            # The spool on disk is the copy that counts; the final upload sends it whole.
            log.warning("recording %s: live upload stopped: %s", self.room, exc)
            self._upload = None
            await upload.abort()

    def _read_spool(self, offset: int) -> bytes:
        try:
            with open(self.spool, "rb") as handle:
                handle.seek(offset)
                return handle.read(UPLOAD_CHUNK)
        except FileNotFoundError:
            return b""

    # --- the worker thread ---

    def _work(self) -> None:
        run_in_background()  # the VP8 transcode's threads inherit it
        timeline = Timeline()
        writer: FragmentedMp4 | None = None
        transcoder: Vp8ToH264 | None = None
        waiting: list[tuple[EncodedFrame, float]] = []  # placed before the writer could open
        try:
            while True:
                item = self._queue.get()
                final = item is None  # the end: whatever happens below, the loop stops after it
                placed = timeline.flush() if item is None else timeline.push(item)
                if writer is None and (placed or (final and waiting)):
                    waiting += placed
                    # An audio track that never sends leaves its format unknown: Opus, as WebRTC's.
                    writer = self._open_writer(waiting, final=final or len(waiting) > MAX_WAITING)
                    if writer is None:
                        if len(waiting) > MAX_WAITING:
                            waiting.clear()  # no picture size either: start again at a later keyframe
                        placed = []
                    else:
                        placed, waiting = waiting, []
                if writer is not None:
                    for frame, seconds in placed:
                        if frame.kind == "audio":
                            self._guarded(writer.write_audio, frame.data, seconds)
                        elif frame.codec == "VP8":
                            transcoder = transcoder or Vp8ToH264()
                            for data, pts, key in transcoder.convert(frame.data, round(seconds * VIDEO_RATE),
                                                                     frame.keyframe):
                                self._guarded(writer.write_video, data, pts / VIDEO_RATE, key)
                        else:
                            self._guarded(writer.write_video, frame.data, seconds, frame.keyframe)
                if final:
                    break
            if writer is not None and transcoder is not None:
                for data, pts, key in transcoder.close():
                    self._guarded(writer.write_video, data, pts / VIDEO_RATE, key)
        except Exception:
            log.exception("recording %s: the writer failed; what was written is kept", self.room)
        finally:
            if writer is not None:
                writer.close()
            timeline_dropped = timeline.dropped
            if timeline_dropped:
                log.info("recording %s: %d frames before the first keyframe or of a replaced connection skipped",
                         self.room, timeline_dropped)

    def _open_writer(self, placed: list[tuple[EncodedFrame, float]], final: bool) -> FragmentedMp4 | None:
        """The spool's writer, once `placed` shows what it holds: the picture size from the first keyframe,
        the audio's format from its first frame (None to wait for more, unless `final`)."""
        kinds = placed[0][0].kinds
        size = None
        if "video" in kinds:
            start = next((f for f, _ in placed if f.kind == "video"), None)  # the keyframe the timeline starts at
            size = None if start is None else picture_size(start.codec, start.data)
            if size is None:
                return None
        audio = None
        if "audio" in kinds:
            first = next((f for f, _ in placed if f.kind == "audio"), None)
            if first is None and not final:
                return None
            if first is not None and first.codec == "aac":
                audio = AudioFormat("aac", first.clock_rate, first.config)
            else:
                audio = OPUS
        return FragmentedMp4(self.spool, size, audio, self._options.fragment)

    def _guarded(self, write: Callable[..., None], *args: object) -> None:
        try:
            write(*args)
        except (av.FFmpegError, ValueError) as exc:
            self.codec_errors += 1
            if self.codec_errors <= 3:
                log.warning("recording %s: a frame could not be written: %s", self.room, exc)


@dataclass(frozen=True, slots=True)
class Finalized:
    info: MediaInfo
    size: int
    media_key: str
    thumbnail_key: str | None


class EmptyRecording(Exception):
    """The spool holds no media (the stream ended before its first keyframe)."""


async def finalize_spool(folder: Path, storage: Storage, key_prefix: str) -> Finalized:
    """Faststart MP4 and thumbnail from the spool in `folder`, uploaded; the folder is removed after."""
    spool, final = folder / SPOOL, folder / MEDIA_OBJECT
    try:
        info = await asyncio.to_thread(finalize, spool, final)
    except (av.FFmpegError, FileNotFoundError) as exc:
        raise EmptyRecording(str(exc)) from None
    if info.duration <= 0:
        raise EmptyRecording("no media in the spool")
    picture = await asyncio.to_thread(thumbnail, final)
    media_key = f"{key_prefix}/{MEDIA_OBJECT}"
    size = await put_file(storage, media_key, final, "video/mp4")
    thumbnail_key = None
    if picture is not None:
        thumbnail_key = f"{key_prefix}/{THUMBNAIL_OBJECT}"
        await storage.put_bytes(thumbnail_key, picture, "image/jpeg")
    await storage.delete(f"{key_prefix}/{LIVE_OBJECT}")
    await storage.abort_stale_uploads(key_prefix)
    await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
    return Finalized(info, size, media_key, thumbnail_key)
