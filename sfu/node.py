"""An SFU node: the rooms of one process, their sessions, and the one task that keeps them honest.

The node is signaling-agnostic (mediasoup's worker habit): it takes SDP offers and returns answers,
and reports what happens through `NodeEvents` — stream started/ended, viewers joined/left — delivered
in order by one owned task. A tick every `tick_interval` sends upstream NACKs and keyframe requests,
refreshes sender reports, and ends publishers and viewers that went silent.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sfu import aiortc_internals as internals
from sfu.errors import AlreadyPublishing, NodeFull, NotLive, UnknownLayer, UnknownSession
from sfu.frame_sink import FrameSinks
from sfu.layers import LayerFeed, can_layer
from sfu.media_format import MediaFormat
from sfu.publisher import Publisher
from sfu.room import Room
from sfu.sdp_fragment import SdpFragment
from sfu.session import Session
from sfu.subscriber import Subscriber

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeSettings:
    ice: internals.IcePlan = field(default_factory=internals.IcePlan)
    max_viewers: int = 500
    publisher_timeout: float = 5.0  # no media for this long ends the stream
    publisher_connect_timeout: float = 15.0  # ...but a publisher still connecting (ICE, DTLS) gets this long
    takeover_after: float = 2.0  # a new publisher may replace one silent for this long
    subscriber_timeout: float = 15.0  # no RTCP from a viewer for this long ends its session
    tick_interval: float = 0.02
    report_interval: float = 0.5


class NodeEvents(Protocol):
    async def stream_started(self, room: str, stream: str, user: str | None, formats: list[MediaFormat]) -> None: ...

    async def stream_ended(self, room: str, stream: str, reason: str, peak_viewers: int) -> None: ...

    async def viewers_changed(self, room: str, stream: str, viewers: int, joined: str | None, left: str | None) -> None: ...


class NoEvents:
    async def stream_started(self, room: str, stream: str, user: str | None, formats: list[MediaFormat]) -> None:
        return None

    async def stream_ended(self, room: str, stream: str, reason: str, peak_viewers: int) -> None:
        return None

    async def viewers_changed(self, room: str, stream: str, viewers: int, joined: str | None, left: str | None) -> None:
        return None


class SfuNode:
    def __init__(
        self, settings: NodeSettings | None = None, events: NodeEvents | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings or NodeSettings()
        self.events: NodeEvents = events or NoEvents()
        self._clock = clock
        self.rooms: dict[str, Room] = {}
        self.sessions: dict[str, Session] = {}
        self.sinks = FrameSinks()
        self.sinks.keyframe_requester = self.request_keyframe
        ports = self.settings.ice.ports
        self._pool = internals.PortPool(*ports) if ports else None
        self._stream_ids: dict[str, str] = {}
        self._queue: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        # Called with each data channel a client opens on a session (signaling: the `chat` channel).
        self.on_data_channel: Callable[[Session, Any], None] | None = None

    # --- lifecycle ---

    async def start(self) -> None:
        internals.check()
        internals.CODEC_GUARD.install()
        self._tasks = [asyncio.create_task(self._tick_forever()), asyncio.create_task(self._deliver_events())]

    async def close(self) -> None:
        """End every stream and session, deliver the last events, stop the node's tasks. Idempotent."""
        if self._closing:
            return
        self._closing = True
        for room in list(self.rooms.values()):
            await self._end_stream(room, "shutdown")
        for session in list(self.sessions.values()):
            await session.close()
        self.sessions.clear()
        if self._tasks:
            try:
                await asyncio.wait_for(self._queue.join(), timeout=5)
            except asyncio.TimeoutError:
                log.warning("%d stream events not delivered at shutdown", self._queue.qsize())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- what signaling asks ---

    def viewers(self) -> int:
        return sum(room.viewers for room in self.rooms.values())

    def is_live(self, room: str) -> bool:
        found = self.rooms.get(room)
        return found is not None and found.live

    def request_keyframe(self, room: str) -> None:
        """Ask the room's publisher for a keyframe (coalesced with viewers' requests)."""
        found = self.rooms.get(room)
        feed = None if found is None else found.feeds.get("video")
        if feed is not None:
            feed.request_keyframe()

    # --- server-side simulcast ---

    def layer_frame(self, room_name: str, name: str, height: int, data: bytes, rtp_timestamp: int, keyframe: bool,
                    ask_keyframe: Callable[[], None]) -> None:
        """One frame of an encoded rendition of the room's video (the HLS ladder), offered as a layer."""
        room = self.rooms.get(room_name)
        source = None if room is None else room.feeds.get("video")
        if room is None or source is None or not can_layer(source.format):
            return
        layer = room.layers.get(name)
        if layer is None or layer.source is not source:
            if not keyframe:
                return  # a layer begins with a keyframe
            layer = room.layers[name] = LayerFeed(name, height, source, ask_keyframe, self._clock)
        layer.on_encoded(data, rtp_timestamp)

    def set_layer(self, session_id: str, name: str) -> None:
        """Move a viewer's video to the layer `name` ("source" for the publisher's own) at its next keyframe."""
        subscriber = self.session(session_id)
        room = self.rooms.get(subscriber.room)
        if not isinstance(subscriber, Subscriber) or room is None:
            raise UnknownSession(session_id)
        target = room.feeds.get("video") if name == "source" else room.layers.get(name)
        down = subscriber.video
        if target is None or down is None:
            raise UnknownLayer(name)
        down.switch_to(target)

    def _step_layer(self, subscriber: Subscriber, step: int) -> None:
        room = self.rooms.get(subscriber.room)
        down = subscriber.video
        if room is None or down is None:
            return
        choices = room.video_choices()
        current = down.target or down.feed
        if current not in choices:
            return
        index = min(len(choices) - 1, max(0, choices.index(current) - step))
        if choices[index] is not current:
            down.switch_to(choices[index])

    def session(self, session_id: str, room: str | None = None) -> Session:
        session = self.sessions.get(session_id)
        if session is None or (room is not None and session.room != room):
            raise UnknownSession(session_id)
        return session

    async def publish(self, room_name: str, offer: str, user: str | None) -> tuple[Publisher, str]:
        """Negotiate a publisher for `room_name`: (session, SDP answer)."""
        self._refuse_if_held(room_name)
        publisher = Publisher(room_name, user, self._clock, self.sinks)
        try:
            answer = await publisher.negotiate(offer, self.settings.ice, self._pool)
            self._refuse_if_held(room_name)  # another may have won while we negotiated
        except BaseException:
            await publisher.close()
            raise
        room = self.rooms.get(room_name)
        if room is None:
            room = self.rooms[room_name] = Room(room_name, self._clock)
        previous = room.publisher
        dropped = room.install(publisher)
        self.sessions[publisher.id] = publisher
        self._watch(publisher)
        if previous is None:
            stream = self._stream_ids[room_name] = secrets.token_hex(8)
            formats = list(publisher.formats.values())
            self._emit(lambda: self.events.stream_started(room_name, stream, user, formats))
        else:
            log.info("room %s: publisher %s takes over from %s", room_name, publisher.id[:8], previous.id[:8])
            self.sessions.pop(previous.id, None)
            await previous.close()
        for subscriber in dropped:
            await self._drop_subscriber(room, subscriber)
        return publisher, answer

    async def subscribe(self, room_name: str, offer: str, user: str | None) -> tuple[Subscriber, str]:
        room = self.rooms.get(room_name)
        if room is None or not room.live:
            raise NotLive(room_name)
        if self.viewers() >= self.settings.max_viewers:
            raise NodeFull(f"this node has its maximum of {self.settings.max_viewers} viewers")
        feeds = room.feeds
        subscriber = Subscriber(room_name, user, self._clock)
        subscriber.on_layer_step = self._step_layer
        try:
            answer = await subscriber.negotiate(offer, feeds, self.settings.ice, self._pool)
            if self.rooms.get(room_name) is not room or not room.live or room.feeds is not feeds:
                raise NotLive(room_name)  # the stream ended or changed format while we negotiated
        except BaseException:
            await subscriber.close()
            raise
        room.add_subscriber(subscriber)
        self.sessions[subscriber.id] = subscriber
        self._watch(subscriber)
        self._emit_viewers(room, joined=subscriber.user or "")
        return subscriber, answer

    async def trickle(self, session_id: str, fragment: SdpFragment) -> None:
        await self.session(session_id).add_candidates(fragment)

    async def end(self, session_id: str, reason: str = "ended by the client") -> None:
        session = self.session(session_id)
        await self._end_session(session, reason)

    # --- internals ---

    def _refuse_if_held(self, room_name: str) -> None:
        room = self.rooms.get(room_name)
        if room is None or room.publisher is None:
            return
        silent_for = self._clock() - room.publisher.last_packet_at
        if silent_for < self.settings.takeover_after:
            raise AlreadyPublishing(room_name)

    def _watch(self, session: Session) -> None:
        pc = session.pc
        if pc.sctp is not None:
            internals.tolerate_invalid_text(pc.sctp)

        @pc.on("datachannel")
        def on_data_channel(channel: Any) -> None:
            if self.on_data_channel is not None and not session.closed:
                self.on_data_channel(session, channel)
            else:
                channel.close()

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            state = pc.connectionState
            if state == "connected" and isinstance(session, Subscriber) and not session.closed:
                session.start()
            elif state in ("failed", "closed") and session.id in self.sessions:
                if isinstance(session, Publisher):
                    return  # a publisher may come back: the media timeout or a takeover decides
                await self._end_session(session, f"connection {state}")

    async def _end_session(self, session: Session, reason: str) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        log.info("%s session %s in %s ends: %s", session.kind, session.id[:8], session.room, reason)
        room = self.rooms.get(session.room)
        if room is not None:
            if isinstance(session, Publisher) and room.publisher is session:
                await self._end_stream(room, reason)
            elif isinstance(session, Subscriber) and room.remove_subscriber(session):
                self._emit_viewers(room, left=session.user or "")
        await session.close()

    async def _drop_subscriber(self, room: Room, subscriber: Subscriber) -> None:
        self.sessions.pop(subscriber.id, None)
        self._emit_viewers(room, left=subscriber.user or "")
        await subscriber.close()

    async def _end_stream(self, room: Room, reason: str) -> None:
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
        publisher = room.publisher
        room.publisher = None
        if publisher is not None:
            publisher.detach()
            self.sessions.pop(publisher.id, None)
            await publisher.close()
        for subscriber in list(room.subscribers.values()):
            room.remove_subscriber(subscriber)
            self.sessions.pop(subscriber.id, None)
            await subscriber.close()
        stream = self._stream_ids.pop(room.name, "")
        peak = room.peak_viewers
        name = room.name
        log.info("room %s: stream %s ended (%s), peak %d viewers", name, stream, reason, peak)
        self._emit(lambda: self.events.stream_ended(name, stream, reason, peak))

    def _emit_viewers(self, room: Room, joined: str | None = None, left: str | None = None) -> None:
        stream = self._stream_ids.get(room.name, "")
        name, count = room.name, room.viewers
        self._emit(lambda: self.events.viewers_changed(name, stream, count, joined, left))

    def _emit(self, event: Callable[[], Awaitable[None]]) -> None:
        self._queue.put_nowait(event)

    async def _deliver_events(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await event()
            except Exception:
                log.exception("delivering a stream event failed")
            finally:
                self._queue.task_done()

    async def _tick_forever(self) -> None:
        next_report = 0.0
        while True:
            await asyncio.sleep(self.settings.tick_interval)
            try:
                now = self._clock()
                report = now >= next_report
                if report:
                    next_report = now + self.settings.report_interval
                await self._tick(now, report)
            except Exception:
                log.exception("SFU tick failed")

    async def _tick(self, now: float, report: bool) -> None:
        for room in list(self.rooms.values()):
            for feed in (*room.feeds.values(), *room.layers.values()):
                await feed.tick()
            publisher = room.publisher
            if publisher is not None and now - publisher.last_packet_at > (
                    self.settings.publisher_timeout if publisher.media_seen
                    else max(self.settings.publisher_timeout, self.settings.publisher_connect_timeout)):
                await self._end_session(publisher, "no media from the publisher")
                continue
            if report:
                for subscriber in list(room.subscribers.values()):
                    if subscriber.connected_once and now - subscriber.last_feedback_at > self.settings.subscriber_timeout:
                        await self._end_session(subscriber, "no feedback from the viewer")
                    else:
                        subscriber.sync_sender_reports()

    def stats(self) -> dict[str, int]:
        packets_out = octets_out = retransmitted = keyframe_waits = packets_in = 0
        for room in self.rooms.values():
            for feed in (*room.feeds.values(), *room.layers.values()):
                packets_in += feed.packets_in if feed in room.feeds.values() else 0
                for down in feed.downtracks:
                    packets_out += down.packets
                    octets_out += down.octets
                    retransmitted += down.retransmitted
                    keyframe_waits += down.keyframe_waits
        guard = internals.CODEC_GUARD
        return {
            "rooms": len(self.rooms),
            "publishers": sum(1 for r in self.rooms.values() if r.live),
            "viewers": self.viewers(),
            "packets_in": packets_in,
            "packets_out": packets_out,
            "octets_out": octets_out,
            "retransmitted": retransmitted,
            "keyframe_waits": keyframe_waits,
            "frames_to_sinks": self.sinks.frames,
            "stock_decoders": guard.stock_decoders,
            "stock_encoders": guard.stock_encoders,
            "passthrough_decoders": guard.passthrough_decoders,
        }
