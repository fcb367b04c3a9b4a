"""Recordings as the platform sees them: when to record, their rows, their objects, their retention.

A stream of a channel with `record_streams` is recorded from its start; the owner (or an admin) can
also start and stop recording while live. When recording stops (or the stream ends) the spool is
finalized in the background: state `recording` -> `processing` -> `ready` (or `failed`, with why).
A node that was killed finds its unfinished recordings when it starts and finalizes them from their
spools. Recordings older than a channel's retention are deleted, objects first.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update

from lifecycle.tasks import stop
from recorder.live_thumbnails import LiveThumbnails
from recorder.recording import LIVE_OBJECT, SPOOL, EmptyRecording, Recording, RecordingOptions, finalize_spool
from recorder.storage import Storage, StorageError
from sfu.frame_sink import FrameSinks
from signaling.auth.roles import Principal, Role
from signaling.channels.service import managed_channel
from signaling.db.database import Database
from signaling.db.models import Channel, Recording as RecordingRow
from signaling.errors import Conflict, Forbidden, NotFound, Unavailable

log = logging.getLogger(__name__)

ACTIVE_STATES = ("recording", "processing")
RECOVER_WAIT = 15.0  # seconds, at most, for this node's first announcement before it recovers its recordings


@dataclass(slots=True)
class _Active:
    row_id: int
    recording: Recording


@dataclass(frozen=True, slots=True)
class RecordingView:
    row: RecordingRow
    channel: str


class RecordingService:
    def __init__(
        self,
        db: Database,
        storage: Storage,
        sinks: FrameSinks,
        spool_root: Path,
        node_id: str,
        options: RecordingOptions,
        thumbnails: LiveThumbnails,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # In a cluster, set to the announcer's: in the registry before recovering, so that no other node
        # adopts what it recovers (signaling.recordings.adoption).
        self.announced: asyncio.Event | None = None
        self._closing = asyncio.Event()
        self._db = db
        self.storage = storage
        self._sinks = sinks
        self._spool_root = spool_root
        self._node = node_id
        self._options = options
        self._thumbnails = thumbnails
        self._clock = clock
        self._active: dict[str, _Active] = {}  # by channel name
        self._live: dict[str, str] = {}  # channel name -> stream id, streams on this node
        self._background: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def is_recording(self, channel: str) -> bool:
        return channel in self._active

    # --- lifecycle ---

    async def start(self, retention_every: float = 3600.0) -> None:
        await self._thumbnails.start()
        self._spawn(self.recover(), "recordings-recover")
        self._sweeper = asyncio.create_task(self.sweep_forever(retention_every), name="recordings-retention")

    async def close(self) -> None:
        """Stop every recording and finalize what can be in a few seconds; the rest is recovered at
        the next start (its spool is on disk)."""
        self._closing.set()
        await stop([self._sweeper], "the recordings' retention")
        self._sweeper = None
        for name in list(self._active):
            await self._stop(name)
        if self._background:
            done, pending = await asyncio.wait(self._background, timeout=20)
            await stop(pending, "the recordings still finishing")
        await self._thumbnails.close()

    def _spawn(self, work: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work, name=name)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- stream events (called by StreamService, in order, for streams on this node) ---

    async def stream_started(self, room: str, stream: str) -> None:
        self._live[room] = stream
        self._thumbnails.watch(room)
        async with self._db.session() as session:
            channel = await session.scalar(select(Channel).where(Channel.name == room))
        if channel is not None and channel.record_streams:
            await self._start(room, stream, channel)

    async def stream_ended(self, room: str, stream: str) -> None:
        self._live.pop(room, None)
        await self._thumbnails.unwatch(room)
        await self._stop(room)

    # --- control ---

    async def control(self, name: str, by: Principal, active: bool) -> RecordingView | None:
        async with self._db.session() as session:
            channel = await managed_channel(session, name, by, "start or stop recording")
        if not active:
            row_id = await self._stop(name)
            return None if row_id is None else await self.get(row_id)
        if name in self._active:
            return await self.get(self._active[name].row_id)
        stream = self._live.get(name)
        if stream is None:
            raise Conflict(f"{name} is not live on this node; recording starts with a stream")
        return await self.get(await self._start(name, stream, channel))

    async def _start(self, room: str, stream: str, channel: Channel) -> int:
        async with self._lock:
            if room in self._active:
                return self._active[room].row_id
            async with self._db.session() as session:
                row = RecordingRow(
                    channel_id=channel.id,
                    stream_id=stream,
                    node=self._node,
                    state="recording",
                    title=channel.title,
                    started_at=self._now(),
                )
                session.add(row)
                await session.flush()
                row_id = row.id
                await session.commit()
            recording = Recording(
                room, self._spool_root / str(row_id), self.storage, _prefix(room, row_id), self._sinks, self._options
            )
            await recording.start()
            self._active[room] = _Active(row_id, recording)
            log.info("recording %d of %s started", row_id, room)
            return row_id

    async def _stop(self, room: str) -> int | None:
        async with self._lock:
            active = self._active.pop(room, None)
        if active is None:
            return None
        await active.recording.stop()
        await self._set(active.row_id, mine=True, state="processing", ended_at=self._now())
        self._spawn(self._finalize(active.row_id, room, active.recording.folder), f"recording-{active.row_id}-finalize")
        return active.row_id

    async def _finalize(self, row_id: int, room: str, folder: Path) -> None:
        try:
            done = await finalize_spool(folder, self.storage, _prefix(room, row_id))
        except EmptyRecording:
            await self._set(row_id, mine=True, state="failed", error="nothing was recorded (no keyframe arrived)")
            return
        except (StorageError, OSError) as exc:
            log.warning("recording %d could not be finalized (its spool is kept, retried at restart): %s", row_id, exc)
            await self._set(row_id, mine=True, state="recording", error=str(exc)[:256])
            return
        await self._set(
            row_id,
            mine=True,
            state="ready",
            duration=round(done.info.duration, 3),
            size=done.size,
            video_codec=done.info.video_codec,
            audio_codec=done.info.audio_codec,
            width=done.info.width,
            height=done.info.height,
            storage_key=done.media_key,
            thumbnail_key=done.thumbnail_key or "",
            error="",
        )
        log.info("recording %d of %s ready: %.1f s, %d bytes", row_id, room, done.info.duration, done.size)

    async def _set(self, row_id: int, mine: bool = False, **values: object) -> None:
        """Change the row; with `mine`, only while this node holds it (another may have adopted it)."""
        if mine:
            async with self._db.session() as session:
                changed = await session.execute(
                    update(RecordingRow).where(RecordingRow.id == row_id, RecordingRow.node == self._node).values(**values))
                await session.commit()
            if changed.rowcount != 1:  # type: ignore[attr-defined]
                log.warning("recording %d is another node's now (or gone): this node's result is not kept", row_id)
            return
        async with self._db.session() as session:
            row = await session.get(RecordingRow, row_id)
            if row is None:
                return
            for key, value in values.items():
                setattr(row, key, value)
            await session.commit()

    async def recover(self) -> int:
        """Finalize what this node left unfinished when it last stopped; the number recovered."""
        async with self._db.session() as session:  # before any recording of this run can exist
            rows = list(
                await session.execute(
                    select(RecordingRow.id, Channel.name, RecordingRow.ended_at)
                    .join(Channel, Channel.id == RecordingRow.channel_id)
                    .where(RecordingRow.node == self._node, RecordingRow.state.in_(ACTIVE_STATES))
                )
            )
        if self.announced is not None and not self.announced.is_set():
            waits = [asyncio.ensure_future(self.announced.wait()), asyncio.ensure_future(self._closing.wait())]
            try:
                await asyncio.wait(waits, timeout=RECOVER_WAIT, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
            if self._closing.is_set():
                return 0  # stopped before it could announce itself: the next start recovers
            if not self.announced.is_set():  # the registry is down: nobody can count this node missing either
                log.warning("recovering recordings before this node could announce itself")
            async with self._db.session() as session:  # still this node's (none was adopted meanwhile)?
                still = set((await session.execute(
                    select(RecordingRow.id).where(RecordingRow.node == self._node,
                                                  RecordingRow.state.in_(ACTIVE_STATES)))).scalars())
            rows = [r for r in rows if r[0] in still]
        await self._forget_adopted({row_id for row_id, _, _ in rows})
        recovered = 0
        for row_id, room, ended_at in rows:
            if any(a.row_id == row_id for a in self._active.values()):
                continue
            folder = self._spool_root / str(row_id)
            if not folder.exists():
                await self._set(row_id, state="failed", error="the spool was lost with the node")
                continue
            if ended_at is None:
                await self._set(row_id, state="processing", ended_at=self._now())
            log.warning("finalizing recording %d of %s, left unfinished by an earlier run", row_id, room)
            await self._finalize(row_id, room, folder)
            recovered += 1
        return recovered

    async def _forget_adopted(self, mine: set[int]) -> None:
        """Remove the spools of recordings another node finished while this one was gone (adopted)."""
        if not self._spool_root.is_dir():
            return
        folders = [f for f in await asyncio.to_thread(lambda: list(self._spool_root.iterdir()))
                   if f.name.isdigit() and int(f.name) not in mine]
        for folder in folders:
            async with self._db.session() as session:
                row = await session.get(RecordingRow, int(folder.name))
            if row is not None and row.node != self._node and row.state in ("ready", "failed"):
                log.info("recording %s was finished by node %s: its spool here goes", folder.name, row.node)
                await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)

    # --- recordings of nodes that are gone (signaling.recordings.adoption) ---

    async def unfinished_elsewhere(self) -> list[tuple[int, str, str]]:
        """(row id, channel, node) of recordings other nodes have not finished, oldest first."""
        async with self._db.session() as session:
            rows = await session.execute(
                select(RecordingRow.id, Channel.name, RecordingRow.node)
                .join(Channel, Channel.id == RecordingRow.channel_id)
                .where(RecordingRow.node != self._node, RecordingRow.state.in_(ACTIVE_STATES))
                .order_by(RecordingRow.id).limit(1000)
            )
            return [(int(i), str(name), str(node)) for i, name, node in rows]

    async def copy_written(self, row_id: int, room: str) -> float | None:
        """When the live copy of recording `row_id` was last written to, by the storage's clock; None when
        the storage holds none (a storage the nodes do not share, or a death before the first push)."""
        return await self.storage.last_written(f"{_prefix(room, row_id)}/{LIVE_OBJECT}")

    async def adopt(self, row_id: int, room: str, node: str) -> bool:
        """Finish recording `row_id`, which node `node` (gone for good) left unfinished, from the live copy
        it had sent to the storage; whether this node took it (another may have, first). What that
        copy lacks (the last seconds before the death, up to a part of the upload) is lost."""
        live_key = f"{_prefix(room, row_id)}/{LIVE_OBJECT}"
        async with self._db.session() as session:
            taken = await session.execute(
                update(RecordingRow)
                .where(RecordingRow.id == row_id, RecordingRow.node == node, RecordingRow.state.in_(ACTIVE_STATES))
                .values(node=self._node, state="processing", ended_at=func.coalesce(RecordingRow.ended_at, self._now()))
            )
            await session.commit()
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            return False
        log.warning("recording %d of %s: its node %s is gone; finishing it here from its live copy", row_id, room, node)
        folder = self._spool_root / str(row_id)
        try:
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
            found = await self.storage.take_unfinished(live_key, folder / SPOOL)
        except Exception as exc:  # noqa: BLE001 - the storage or disk failed: give it back, tried again later
            log.warning("recording %d: its live copy could not be read (%s); tried again later", row_id, exc)
            await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
            await self._set(row_id, node=node, state="recording")
            return False
        if not found:  # gone between the two looks: another node's finalize took it
            await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
            await self._set(row_id, node=node, state="recording")
            return False
        await self._finalize(row_id, room, folder)
        return True

    # --- reading and deleting ---

    async def get(self, row_id: int) -> RecordingView:
        async with self._db.session() as session:
            found = (
                await session.execute(
                    select(RecordingRow, Channel.name)
                    .join(Channel, Channel.id == RecordingRow.channel_id)
                    .where(RecordingRow.id == row_id)
                )
            ).first()
        if found is None:
            raise NotFound(f"there is no recording {row_id}")
        return RecordingView(found[0], found[1])

    async def of_channel(self, name: str, before: int | None, limit: int) -> tuple[list[RecordingView], int | None]:
        async with self._db.session() as session:
            channel = await session.scalar(select(Channel).where(Channel.name == name))
            if channel is None:
                raise NotFound(f"there is no channel {name!r}")
            query = select(RecordingRow).where(RecordingRow.channel_id == channel.id)
            if before is not None:
                query = query.where(RecordingRow.id < before)
            rows = list(await session.scalars(query.order_by(RecordingRow.id.desc()).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return [RecordingView(r, name) for r in rows], (rows[-1].id if more else None)

    async def delete(self, row_id: int, by: Principal) -> None:
        view = await self.get(row_id)
        async with self._db.session() as session:
            channel = await session.get(Channel, view.row.channel_id)
        if channel is None or (channel.owner_id != by.user_id and not by.at_least(Role.ADMIN)):
            raise Forbidden("only the channel's owner or an admin can delete its recordings")
        if view.row.state in ACTIVE_STATES:
            raise Conflict("the recording is still being made; stop it and wait until it is ready")
        await self._remove(view.row)

    async def _remove(self, row: RecordingRow) -> None:
        try:
            for key in (row.storage_key, row.thumbnail_key):
                if key:
                    await self.storage.delete(key)  # objects first: a row never points at nothing
        except StorageError as exc:
            raise Unavailable(f"the storage could not delete the recording's files; try again ({exc})", retry_after=30) from None
        async with self._db.session() as session:
            found = await session.get(RecordingRow, row.id)
            if found is not None:
                await session.delete(found)
                await session.commit()

    async def sweep_retention(self) -> int:
        """Delete finished recordings older than their channel's retention; how many."""
        now = self._now()
        async with self._db.session() as session:
            rows = list(
                await session.execute(
                    select(RecordingRow, Channel.recording_retention_days)
                    .join(Channel, Channel.id == RecordingRow.channel_id)
                    .where(Channel.recording_retention_days > 0, RecordingRow.state.in_(("ready", "failed")))
                )
            )
        expired = [row for row, days in rows if row.started_at < now - timedelta(days=days)]
        for row in expired:
            await self._remove(row)
        return len(expired)

    async def sweep_forever(self, every: float) -> None:
        while True:
            try:
                removed = await self.sweep_retention()
                if removed:
                    log.info("retention removed %d recordings", removed)
            except (Unavailable, OSError) as exc:
                log.warning("retention sweep failed (retried later): %s", exc)
            await asyncio.sleep(every)

    def playback_url(self, row: RecordingRow, base_url: str, expires: int) -> str | None:
        return self._object_url(row.id, row.storage_key, "media", base_url, expires) if row.state == "ready" else None

    def thumbnail_url(self, row: RecordingRow, base_url: str, expires: int) -> str | None:
        return self._object_url(row.id, row.thumbnail_key, "thumbnail.jpg", base_url, expires)

    def _object_url(self, row_id: int, key: str, name: str, base_url: str, expires: int) -> str | None:
        if not key:
            return None
        return self.storage.presigned_url(key, expires) or f"{base_url}/api/recordings/{row_id}/{name}"


def _prefix(room: str, row_id: int) -> str:
    return f"recordings/{room}/{row_id}"
