"""An SFU node: the rooms of one process, their sessions, and the one task that keeps them honest.

The node is signaling-agnostic (mediasoup's worker habit): it takes SDP offers and returns answers,
and reports what happens through `NodeEvents` — stream started/ended, viewer count changed —
delivered in order by one owned task. A tick every `tick_interval` sends upstream NACKs and keyframe
requests, refreshes sender reports, and ends sessions that went silent or never connected.

Every session has bounds. One that does not connect within `connect_timeout` is ended and its sockets
freed; sessions still connecting hold a place among `max_viewers` (so concurrent offers cannot exceed
it) but are not viewers, and at most `max_pending` of them (`max_pending_per_client` from one address)
may wait at once. Viewer counts go out at most once per `viewers_interval` per room, however many
viewers come and go in between.

A stream spans nodes by relays (`sfu.relay`): `relay` carries a room's stream from the node upstream
into a room here, which its viewers join as on the origin. A relay's room tells no stream events (the
stream is the origin's); it tells `RelayEvents` how many watch here, so that the origin counts the
whole audience. Like a publisher's, a relay's connection that drops leaves its room to the media
timeout, so that a relay from the stream's next origin, or its publisher itself, can take it over with
the viewers in it; the room also ends after `relay_linger` seconds without viewers.
On the upstream node a relay is a subscriber that holds no viewer place (at most `max_relays`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lifecycle.tasks import stop
from sfu import aiortc_internals as internals
from sfu.errors import (
    AlreadyPublishing,
    NodeFull,
    NotLive,
    TooManyCandidates,
    TooManyPending,
    UnknownLayer,
    UnknownSession,
)
from sfu.feed import Feed
from sfu.frame_sink import FrameSinks
from sfu.layers import LayerFeed, can_layer
from sfu.media_format import MediaFormat
from sfu.output import DROP_REASONS
from sfu.publisher import Publisher
from sfu.rtmp.ingest import RtmpPublisher
from sfu.relay import MAX_HOPS, Relay, relay_path
from sfu.room import Room
from sfu.sdp_fragment import SdpFragment
from sfu.session import Session
from sfu.subscriber import Subscriber
from telemetry.context import SESSION, STREAM

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeSettings:
    ice: internals.IcePlan = field(default_factory=internals.IcePlan)
    max_viewers: int = 500
    max_pending: int = 100  # sessions still connecting, on the whole node
    max_pending_per_client: int = 10  # ...from one client address
    max_candidates: int = 64  # remote candidates one session takes over its life (trickle)
    connect_timeout: float = 10.0  # a session not connected (ICE and DTLS) by then is ended
    publisher_timeout: float = 5.0  # no media for this long ends the stream
    publisher_connect_timeout: float = 15.0  # ...but a publisher still connecting (ICE, DTLS) gets this long
    max_publish_bitrate: int = 0  # bits per second a publisher may send (0: no ceiling)
    takeover_after: float = 2.0  # a new publisher may replace one silent for this long
    subscriber_timeout: float = 15.0  # no RTCP from a viewer for this long ends its session
    tick_interval: float = 0.02
    report_interval: float = 0.5
    viewers_interval: float = 1.0  # at most one viewer-count event per room this often
    max_relays: int = 64  # relays to other nodes this node feeds
    relay_linger: float = 10.0  # a relay's room with no subscriber for this long ends


class NodeEvents(Protocol):
    async def stream_started(self, room: str, stream: str, user: str | None, formats: list[MediaFormat]) -> None: ...

    async def stream_ended(self, room: str, stream: str, reason: str, peak_viewers: int) -> None: ...

    async def viewers_changed(self, room: str, stream: str, viewers: int) -> None: ...


class NoEvents:
    async def stream_started(self, room: str, stream: str, user: str | None, formats: list[MediaFormat]) -> None:
        return None

    async def stream_ended(self, room: str, stream: str, reason: str, peak_viewers: int) -> None:
        return None

    async def viewers_changed(self, room: str, stream: str, viewers: int) -> None:
        return None


class RelayEvents(Protocol):
    """What a relay's room tells instead of stream events: they go to the node upstream."""

    async def relay_viewers(self, relay: Relay, stream: str, viewers: int) -> None: ...

    async def relay_ended(self, relay: Relay, stream: str, reason: str) -> None: ...

    async def relay_lost(self, relay: Relay) -> None:
        """The relay's connection dropped; its room waits for the media timeout for another source."""


class NoRelayEvents:
    async def relay_viewers(self, relay: Relay, stream: str, viewers: int) -> None:
        return None

    async def relay_ended(self, relay: Relay, stream: str, reason: str) -> None:
        return None

    async def relay_lost(self, relay: Relay) -> None:
        return None


class SfuNode:
    def __init__(
        self, settings: NodeSettings | None = None, events: NodeEvents | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings or NodeSettings()
        self.events: NodeEvents = events or NoEvents()
        self.relay_events: RelayEvents = NoRelayEvents()
        self._clock = clock
        self.rooms: dict[str, Room] = {}
        self.sessions: dict[str, Session] = {}
        self.sinks = FrameSinks()
        self.sinks.keyframe_requester = self.request_keyframe
        self.gathering = internals.HostGathering(self.settings.ice)
        self._pending: dict[str, Session] = {}  # sessions not connected yet, by id
        self._pending_by_client: Counter[str] = Counter()
        self._reserved = 0  # offers being negotiated right now (a place held for each)
        self._waiting_viewers = 0  # viewers' offers negotiating or connecting (publishers' do not hold viewer places)
        self._relays_joining = 0  # other nodes' relays negotiating here (each holds one of `max_relays`)
        self._retired: Counter[str] = Counter()  # counters of sessions and feeds that are gone
        self._queue: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._closes: set[asyncio.Task[None]] = set()  # sessions closing (aiortc takes a while): owned here
        self._closing = False
        self._draining = False  # handing its sessions over: takes none but other nodes' relays
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
            self._end_stream(room, "shutdown")
        for session in list(self.sessions.values()):
            self._forget(session)
            self._close_later(session)
        if self._closes:
            await asyncio.gather(*self._closes, return_exceptions=True)
        if self._tasks:
            try:
                await asyncio.wait_for(self._queue.join(), timeout=5)
            except asyncio.TimeoutError:
                log.warning("%d stream events not delivered at shutdown", self._queue.qsize())
        await stop(self._tasks, "the node's event delivery")

    # --- handing over (a node shutting down in a cluster) ---

    def drain(self) -> int:
        """Take no new session but other nodes' relays (its streams may be relayed elsewhere while its
        viewers move there), and end every viewer's session so its player reconnects through a front
        door, which places it on another node; the number of viewers' sessions ended."""
        self._draining = True
        ended = 0
        for room in list(self.rooms.values()):
            for subscriber in [s for s in room.subscribers.values() if not s.relay]:
                self._end_session(subscriber, "this node is shutting down: watch on another")
                ended += 1
        return ended

    def release_publishers(self) -> int:
        """Close the connections of the publishers here, leaving their streams (and the relays fed from
        them) in place: each broadcaster reconnects through a front door and goes live on another node,
        where the stream goes on; here it ends when that takes it over, or at the media timeout."""
        released = 0
        for room in list(self.rooms.values()):
            publisher = room.publisher
            if publisher is None or room.relay_from is not None or publisher.closed:
                continue
            if not publisher.connected:  # never came up: nothing to hand over
                self._end_session(publisher, "this node is shutting down")
                continue
            self._close_later(publisher)
            released += 1
        return released

    def originated(self) -> int:
        """Streams published on this node."""
        return sum(1 for name in self.rooms if self.originates(name))

    # --- what signaling asks ---

    def viewers(self) -> int:
        return sum(room.viewers for room in self.rooms.values())

    @property
    def pending(self) -> int:
        """Sessions negotiating or connecting: not viewers, but each holds a place."""
        return len(self._pending) + self._reserved

    @property
    def pending_viewers(self) -> int:
        """Viewers' sessions negotiating or connecting: each holds one of `max_viewers`."""
        return self._waiting_viewers

    @property
    def closing(self) -> int:
        """Sessions ended and still closing."""
        return len(self._closes)

    def is_live(self, room: str) -> bool:
        found = self.rooms.get(room)
        return found is not None and found.live

    def originates(self, room: str) -> bool:
        """Is `room`'s stream published on this node (not relayed here)?"""
        found = self.rooms.get(room)
        return found is not None and found.live and found.relay_from is None

    def relays_in(self) -> int:
        """Streams relayed to this node from others."""
        return sum(1 for room in self.rooms.values() if room.live and room.relay_from is not None)

    def relays_out(self) -> int:
        """Relays this node feeds to other nodes."""
        return sum(1 for room in self.rooms.values() for s in room.subscribers.values() if s.relay)

    def end_room(self, room: str, reason: str) -> None:
        """End the room's stream and every session in it (its channel went live elsewhere)."""
        found = self.rooms.get(room)
        if found is not None:
            self._end_stream(found, reason)

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

    def drop_layers(self, room_name: str, stream: str) -> None:
        """The stream's encoded renditions stop (its HLS ladder ended): their viewers go back to the source."""
        room = self.rooms.get(room_name)
        if room is not None and room.stream == stream:
            room.drop_layers()
            for subscriber in room.subscribers.values():
                subscriber.layer_pinned = False  # back on the source: the choice is the server's again

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

    def layers(self, session_id: str) -> tuple[list[str], str, bool]:
        """A viewer's video choices ("source" first, then the layers, highest first), the one it is on
        (or moving to), and whether the server picks (True) or the viewer did."""
        subscriber = self.session(session_id)
        room = self.rooms.get(subscriber.room)
        if not isinstance(subscriber, Subscriber) or room is None:
            raise UnknownSession(session_id)
        choices = room.video_choices()
        down = subscriber.video
        current = (down.target or down.feed) if down is not None else None
        names = [_layer_name(feed) for feed in choices]
        return names, _layer_name(current) if current is not None else "source", not subscriber.layer_pinned

    def choose_layer(self, session_id: str, name: str) -> None:
        """A viewer's own choice: `name` from `layers()` stays until it chooses again or the layer ends;
        "auto" hands the choice back to the loss policy."""
        subscriber = self.session(session_id)
        if not isinstance(subscriber, Subscriber):
            raise UnknownSession(session_id)
        if name == "auto":
            subscriber.layer_pinned = False
            return
        room = self.rooms.get(subscriber.room)
        if room is None or name not in [_layer_name(feed) for feed in room.video_choices()]:
            raise UnknownLayer(name)
        down = subscriber.video
        current = (down.target or down.feed) if down is not None else None
        if current is not None and _layer_name(current) == name:
            subscriber.layer_pinned = True  # on it (or moving to it) already: no keyframe to ask for
            return
        # Each move asks its target for a keyframe (the broadcaster's, or one in every rendition of the
        # ladder): one viewer may not make the whole channel pay for them over and over.
        now = self._clock()
        if now - subscriber.layer_chosen_at < MIN_LAYER_CHOICE_GAP:
            raise TooManyPending(f"choose a layer at most every {MIN_LAYER_CHOICE_GAP:g} s")
        self.set_layer(session_id, name)
        subscriber.layer_chosen_at = now
        subscriber.layer_pinned = True

    def _step_layer(self, subscriber: Subscriber, step: int) -> None:
        if subscriber.layer_pinned:
            return  # the viewer chose: the loss policy does not move it
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

    async def publish(self, room_name: str, offer: str, user: str | None, client: str = "") -> tuple[Publisher, str]:
        """Negotiate a publisher for `room_name`: (session, SDP answer)."""
        self._refuse_if_held(room_name)
        self._admit(client, viewer=False)
        publisher = Publisher(room_name, user, self._clock, self.sinks, client)
        SESSION.set(publisher.id)
        try:
            answer = await publisher.negotiate(offer, self.gathering, self.settings.max_publish_bitrate)
            if self._closing or self._draining:
                raise NodeFull("this node is shutting down")
            self._refuse_if_held(room_name)  # another may have won while we negotiated
        except BaseException:
            self._unreserve(client, viewer=False)
            await publisher.close()
            raise
        # From here to the end nothing awaits: the room changes hands at once, whoever else is publishing.
        self._reserved -= 1
        self._pending[publisher.id] = publisher
        self._install(publisher)
        self._watch(publisher)
        return publisher, answer

    def rtmp_publisher(self, room_name: str, user: str | None, client: str = "") -> RtmpPublisher:
        """An RTMP encoder's publisher for `room_name`: it takes the room once the encoder said what it
        sends (AlreadyPublishing then if another publisher holds it), and leaves it when the encoder stops."""
        self._refuse_if_held(room_name)
        if self._closing or self._draining:
            raise NodeFull("this node is shutting down")

        def ready(publisher: RtmpPublisher) -> None:
            self._refuse_if_held(room_name)
            if self._closing or self._draining:
                raise NodeFull("this node is shutting down")
            self._install(publisher)
            self._connected(publisher)

        def ended(publisher: RtmpPublisher, reason: str) -> None:
            if publisher.id in self.sessions:
                self._end_session(publisher, reason)
            else:
                self._close_later(publisher)

        publisher = RtmpPublisher(room_name, user, self._clock, self.sinks, client, ready, ended)
        # An encoder that never sends video this node can forward must not hold the channel.
        wait = self.settings.publisher_connect_timeout
        asyncio.get_running_loop().call_later(wait, lambda: None if publisher.ready or publisher.ended else publisher.refuse(
            f"no H.264 video arrived within {wait:g} s of publishing; send video (H.264) with the audio"))
        return publisher

    def _install(self, publisher: Publisher) -> None:
        """Make `publisher` the source of its room (a new stream, or a takeover of the one there)."""
        room_name, user = publisher.room, publisher.user
        room = self.rooms.get(room_name)
        previous = room.publisher if room is not None else None
        if room is not None and (not room.formats_match(publisher.formats)
                                 or (previous is not None and previous.sink_audio != publisher.sink_audio)):
            log.info("room %s: the publisher is back in another format; a new stream starts", room_name)
            self._end_stream(room, "the publisher reconnected with another format")  # its viewers cannot follow
            room = previous = None
        if room is not None and room.relay_from is not None:
            # The stream's origin moved here (it had died): the relay's viewers stay, on a stream of this node.
            log.info("room %s: relayed from %s until now, published here from now on", room_name, room.relay_from)
            room.relay_from, room.relay_path = None, ()
            room.stream = secrets.token_hex(8)
            room.reported_viewers, room.peak_viewers = -1, room.audience  # a new stream: tell its audience
            stream, formats = room.stream, list(publisher.formats.values())
            self._emit(lambda: self.events.stream_started(room_name, stream, user, formats))
        if room is None:
            room = self.rooms[room_name] = Room(room_name, secrets.token_hex(8), self._clock)
            stream, formats = room.stream, list(publisher.formats.values())
            self._emit(lambda: self.events.stream_started(room_name, stream, user, formats))
            STREAM.set(room.stream)
            log.info("room %s: stream %s starts (%s publisher %s)", room_name, room.stream, publisher.kind,
                     publisher.id[:8])
        room.install(publisher)
        self.sessions[publisher.id] = publisher
        if previous is not None:
            log.info("room %s: publisher %s takes over from %s", room_name, publisher.id[:8], previous.id[:8])
            self._forget(previous)
            self._close_later(previous)

    async def subscribe(self, room_name: str, offer: str, user: str | None, client: str = "",
                        relay: bool = False) -> tuple[Subscriber, str]:
        """A viewer's session; or, with `relay`, another node's relay of the stream (no viewer place)."""
        room = self.rooms.get(room_name)
        if room is None or not room.live:
            raise NotLive(room_name)
        if relay and (room.publisher is None or room.publisher.closed):
            raise NotLive(f"{room_name} has no source here now")  # its publisher or relay moved: feed no relay
        if relay and client.removeprefix("relay:") in room.relay_path:
            raise NotLive(f"{room_name} is relayed here through that very node")  # no loop of relays
        if relay and len(room.relay_path) >= MAX_HOPS:
            raise NodeFull(f"{room_name} reaches this node through {MAX_HOPS} relays: it goes no farther")
        if relay and self.relays_out() + self._relays_joining >= self.settings.max_relays:
            raise NodeFull(f"this node feeds its maximum of {self.settings.max_relays} relays")
        viewer = not relay
        self._admit(client, viewer=viewer, relay=relay)
        feeds = room.feeds
        subscriber = Subscriber(room_name, user, self._clock, client, relay=relay)
        SESSION.set(subscriber.id)
        STREAM.set(room.stream)
        subscriber.on_layer_step = self._step_layer
        room.joining += 1  # a relay's room does not end for want of viewers while one joins
        self._relays_joining += relay
        try:
            answer = await subscriber.negotiate(offer, feeds, self.gathering)
            if self._closing or (self._draining and not relay):
                raise NodeFull("this node is shutting down")
            if self.rooms.get(room_name) is not room or not room.live or room.feeds is not feeds:
                raise NotLive(room_name)  # the stream ended or changed format while we negotiated
        except BaseException:
            self._unreserve(client, viewer=viewer)
            await subscriber.close()
            raise
        finally:
            room.joining -= 1
            self._relays_joining -= relay
        self._reserved -= 1
        self._pending[subscriber.id] = subscriber
        room.add_subscriber(subscriber)
        self.sessions[subscriber.id] = subscriber
        self._watch(subscriber)
        return subscriber, answer

    async def relay(self, room_name: str, upstream: str,
                    ask: Callable[[str], Awaitable[tuple[str, str, str, Sequence[object]]]]) -> Relay:
        """Carry `room_name`'s stream from node `upstream` into a room here. `ask(offer)` sends the
        relay's offer upstream and returns (its session there, the answer, the stream's id, the nodes
        the stream reaches `upstream` through, nearest first: its `relay_path`). A room
        relayed from elsewhere is re-attached to `upstream` (its viewers stay); one published here is
        refused."""
        if self._closing or (self._draining and room_name not in self.rooms):
            raise NodeFull("this node is shutting down")  # (a relay here still follows its stream: it feeds others)
        if self.originates(room_name):
            raise AlreadyPublishing(f"{room_name} is published on this node")
        relay = Relay(room_name, upstream, self._clock, self.sinks)
        try:
            offer = await relay.offer(self.gathering)
            relay.upstream_session, answer, stream, beyond = await ask(offer)
            await relay.accept(answer)
            if self._closing:
                raise NodeFull("this node is shutting down")
            if self.originates(room_name):
                raise AlreadyPublishing(f"{room_name} is published on this node")
        except BaseException:
            if relay.upstream_session:  # the node upstream holds a session for it: let it go at once
                self._emit(lambda: self.relay_events.relay_ended(relay, "", "the relay could not be set up"))
            await relay.close()
            raise
        # From here to the end nothing awaits.
        room = self.rooms.get(room_name)
        previous = room.publisher if room is not None else None
        if room is not None and not room.formats_match(relay.formats):
            self._end_stream(room, "the stream upstream changed format")
            room = previous = None
        if room is None:
            room = self.rooms[room_name] = Room(room_name, stream, self._clock)
        if room.relay_from != upstream or room.stream != stream:
            room.reported_viewers = -1  # the node upstream (a new one) hears the audience here
        room.relay_from, room.relay_path = upstream, relay_path(upstream, beyond)
        room.stream = stream
        room.install(relay)
        self.sessions[relay.id] = relay
        self._watch(relay)
        if previous is not None:
            log.info("room %s: relay from %s takes over from %s", room_name, upstream, previous.id[:8])
            self._forget(previous)
            self._close_later(previous)
        log.info("room %s: stream %s relayed from node %s", room_name, stream, upstream)
        return relay

    def set_relayed(self, session_id: str, viewers: int) -> None:
        """The relay on `session_id` says how many watch through it."""
        session = self.session(session_id)
        room = self.rooms.get(session.room)
        if not isinstance(session, Subscriber) or not session.relay or room is None:
            raise UnknownSession(session_id)
        room.set_relayed(session, viewers)

    async def trickle(self, session_id: str, fragment: SdpFragment) -> None:
        session = self.session(session_id)
        self._check_candidates(session.candidates + len(fragment.candidates))
        candidates = session.checked_candidates(fragment)
        session.candidates += len(fragment.candidates)
        await session.add_candidates(candidates)

    async def restart_ice(self, session_id: str, fragment: SdpFragment) -> str:
        """An ICE restart (new credentials, the candidates that come with them); the answer fragment.
        Everything is checked before the session's credentials change: a refused restart changes nothing."""
        session = self.session(session_id)
        self._check_candidates(len(fragment.candidates))
        candidates = session.checked_candidates(fragment)
        answer = session.restart_ice(fragment)  # checks the credentials before it changes them
        session.candidates = len(fragment.candidates)  # a restart starts the count afresh
        await session.add_candidates(candidates)
        return answer

    def _check_candidates(self, count: int) -> None:
        if count > self.settings.max_candidates:
            raise TooManyCandidates(f"a session takes at most {self.settings.max_candidates} remote candidates "
                                    "(an ICE restart starts afresh)")

    async def end(self, session_id: str, reason: str = "ended by the client") -> None:
        self._end_session(self.session(session_id), reason)

    # --- internals ---

    def _admit(self, client: str, viewer: bool, relay: bool = False) -> None:
        """Hold a place for an offer about to be negotiated, or refuse it (before any await, so
        concurrent offers cannot all pass the same check)."""
        s = self.settings
        if self._closing:
            raise NodeFull("this node is shutting down")
        if self._draining and not relay:
            raise NodeFull("this node is shutting down; another takes the session")
        if viewer and self.viewers() + self._waiting_viewers >= s.max_viewers:
            raise NodeFull(f"this node has its maximum of {s.max_viewers} viewers")
        if self.pending >= s.max_pending:
            raise NodeFull(f"{s.max_pending} sessions are connecting to this node; try again shortly")
        if self._pending_by_client[client] >= s.max_pending_per_client:
            raise TooManyPending(
                f"{s.max_pending_per_client} sessions from this address are still connecting; "
                f"they are given up after {s.connect_timeout:g} s"
            )
        self._reserved += 1
        self._waiting_viewers += viewer
        self._pending_by_client[client] += 1

    def _unreserve(self, client: str, viewer: bool) -> None:
        """The offer was refused: give its place back."""
        self._reserved -= 1
        self._waiting_viewers -= viewer
        self._release(client)

    def _settle(self, session: Session) -> None:
        """The session is no longer pending (it connected, or it ended)."""
        if self._pending.pop(session.id, None) is not None:
            self._waiting_viewers -= isinstance(session, Subscriber) and not session.relay
            self._release(session.client)

    def _release(self, client: str) -> None:
        self._pending_by_client[client] -= 1
        if self._pending_by_client[client] <= 0:
            del self._pending_by_client[client]

    def _refuse_if_held(self, room_name: str) -> None:
        room = self.rooms.get(room_name)
        if room is None or room.publisher is None:
            return
        if isinstance(room.publisher, Relay):
            return  # a publisher here (holding the channel's claim) replaces a relay at once
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
            if state == "connected" and not session.closed and session.id in self.sessions:
                self._connected(session)
            elif state in ("failed", "closed") and session.id in self.sessions:
                if isinstance(session, Publisher) and session.connected:
                    # A publisher may come back, a relay be re-attached to the stream's next origin (its
                    # viewers stay): the media timeout or a takeover decides.
                    if isinstance(session, Relay) and self.rooms.get(session.room) is not None \
                            and self.rooms[session.room].publisher is session:
                        self._emit(lambda: self.relay_events.relay_lost(session))
                    return
                self._end_session(session, f"connection {state}")

    def _connected(self, session: Session) -> None:
        self._settle(session)
        if isinstance(session, Subscriber):
            room = self.rooms.get(session.room)
            if room is not None:
                room.connect(session)
        else:
            session.connected = True

    def _end_session(self, session: Session, reason: str) -> None:
        """Take the session off the node's books now; it closes in the background."""
        if session.id not in self.sessions:
            return
        log.info("%s session %s in %s ends: %s", session.kind, session.id[:8], session.room, reason)
        room = self.rooms.get(session.room)
        if room is not None:
            if isinstance(session, Publisher) and room.publisher is session:
                self._end_stream(room, reason)
            elif isinstance(session, Subscriber):
                room.remove_subscriber(session)
        self._forget(session)
        self._close_later(session)

    def _forget(self, session: Session) -> None:
        """Remove the session from the node's books; what it counted stays in the node's totals."""
        if self.sessions.pop(session.id, None) is None:
            return
        self._settle(session)
        _count(session, self._retired)

    def _close_later(self, session: Session) -> None:
        """Close in a task of the node's own: aiortc's close takes up to seconds, and the tick (every
        room's feedback) or a request must not wait for it."""
        task = asyncio.ensure_future(session.close())
        self._closes.add(task)
        task.add_done_callback(self._closes.discard)

    def _end_stream(self, room: Room, reason: str) -> None:
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
        for feed in room.feeds.values():
            self._retired["packets_in"] += feed.packets_in
            feed.packets_in = 0  # counted once: the room may still be reachable for a moment
        publisher = room.publisher
        room.publisher = None
        if publisher is not None:
            publisher.detach()
            publisher.ending("the server is shutting down" if reason == "shutdown" else reason)
            self._forget(publisher)
            self._close_later(publisher)
        for subscriber in list(room.subscribers.values()):
            room.remove_subscriber(subscriber)
            self._forget(subscriber)
            self._close_later(subscriber)
        name, stream, peak = room.name, room.stream, room.peak_viewers
        if isinstance(publisher, Relay) and room.relay_from is not None:
            log.info("room %s: relay of stream %s ended (%s)", name, stream, reason)
            relay = publisher
            self._emit(lambda: self.relay_events.relay_ended(relay, stream, reason))
            return
        log.info("room %s: stream %s ended (%s), peak %d viewers", name, stream, reason, peak)
        self._emit(lambda: self.events.stream_ended(name, stream, reason, peak))

    def _report_viewers(self, room: Room) -> None:
        if room.audience != room.reported_viewers:
            room.reported_viewers = count = room.audience
            name, stream = room.name, room.stream
            if isinstance(room.publisher, Relay) and room.relay_from is not None:
                relay = room.publisher
                self._emit(lambda: self.relay_events.relay_viewers(relay, stream, count))
            else:
                self._emit(lambda: self.events.viewers_changed(name, stream, count))

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
        next_report = next_viewers = 0.0
        while True:
            await asyncio.sleep(self.settings.tick_interval)
            try:
                now = self._clock()
                report = now >= next_report
                if report:
                    next_report = now + self.settings.report_interval
                await self._tick(now, report)
                if now >= next_viewers:
                    next_viewers = now + self.settings.viewers_interval
                    for room in list(self.rooms.values()):
                        self._report_viewers(room)
            except Exception:
                log.exception("SFU tick failed")

    async def _tick(self, now: float, report: bool) -> None:
        for room in list(self.rooms.values()):
            for feed in (*room.feeds.values(), *room.layers.values()):
                await feed.tick()
            publisher = room.publisher
            if publisher is None:
                continue
            publisher.tick()
            if (room.relay_from is not None and not room.subscribers and not room.joining
                    and now - room.idle_since > self.settings.relay_linger):
                self._end_stream(room, f"no viewer on this relay for {self.settings.relay_linger:g} s")
                continue
            if now - publisher.last_packet_at > (
                    self.settings.publisher_timeout if publisher.media_seen
                    else max(self.settings.publisher_timeout, self.settings.publisher_connect_timeout)):
                self._end_session(publisher, "no media from the publisher")
                continue
            if report:
                over = "" if room.relay_from is not None else publisher.over_bitrate(now, self.settings.max_publish_bitrate)
                if over:
                    self._end_session(publisher, over)
                    continue
                for subscriber in list(room.subscribers.values()):
                    if subscriber.connected and now - subscriber.last_feedback_at > self.settings.subscriber_timeout:
                        self._end_session(subscriber, "no feedback from the viewer")
                    elif subscriber.connected:
                        subscriber.sync_sender_reports()
        if report:
            for session in list(self._pending.values()):
                if now - session.created_at > self.settings.connect_timeout:
                    self._end_session(session, f"not connected within {self.settings.connect_timeout:g} s")

    def stats(self) -> dict[str, int]:
        """Counters since the node started (they never go down) and gauges of what is live now."""
        totals = Counter(self._retired)
        for session in self.sessions.values():
            _count(session, totals)
        for room in self.rooms.values():
            for feed in room.feeds.values():
                totals["packets_in"] += feed.packets_in
        guard = internals.CODEC_GUARD
        out = {
            **self.gathering.guard.counts,
            "rooms": len(self.rooms),
            "publishers": sum(1 for r in self.rooms.values() if r.live),
            "viewers": self.viewers(),
            "pending": self.pending,
            "frames_to_sinks": self.sinks.frames,
            "stock_decoders": guard.stock_decoders,
            "stock_encoders": guard.stock_encoders,
        }
        for name in ("packets_in", "packets_out", "octets_out", "retransmitted", "keyframe_waits", "nacks_refused",
                     "sink_frames", "sink_frames_skipped", "sink_gaps", "sink_skipped_ms"):
            out[name] = totals[name]
        for reason in DROP_REASONS[1:]:
            out[f"dropped_{reason}"] = totals[f"dropped_{reason}"]
        return out


def _count(session: Session, into: Counter[str]) -> None:
    """Add what `session` counted (forwarded, re-sent, dropped; frames for the sinks) to `into`."""
    if isinstance(session, Subscriber):
        for down in session.downtracks:
            into["packets_out"] += down.packets
            into["octets_out"] += down.octets
            into["retransmitted"] += down.retransmitted
            into["keyframe_waits"] += down.keyframe_waits
            into["nacks_refused"] += down.nacks_refused
            for reason, count in zip(DROP_REASONS, down.dropped):
                if count:
                    into[f"dropped_{reason}"] += count
    elif isinstance(session, Publisher):
        for assembler in session.assemblers.values():
            into["sink_frames"] += assembler.frames
            into["sink_frames_skipped"] += assembler.skipped_frames
            into["sink_gaps"] += assembler.gaps
            into["sink_skipped_ms"] += round(assembler.skipped_seconds * 1000)


def _layer_name(feed: Feed) -> str:
    return feed.name if isinstance(feed, LayerFeed) else "source"


MIN_LAYER_CHOICE_GAP = 3.0  # seconds between a viewer's own layer choices
