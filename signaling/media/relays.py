"""The streams this node carries for its viewers from other nodes (the receiving ends of relays).

A front door that places a viewer here names the nodes that carry the stream (`upstreams`: the
origin first, then nodes relaying it already, so relays may chain). `ensure` makes the stream live
here, unless it is, from the first of them that takes the relay: the offer goes upstream as a
`subscribe` with `relay` set, the answer comes back with the stream's id, and the node's room fills as
from a publisher. One relay per channel is set up at a time, however many viewers arrive at once.

Node-to-node requests travel on each node's relay topic (`relay_topic`), not on its control topic:
a burst of viewers waiting for relays on two nodes that feed each other cannot take every slot that
the other's relay request needs.

Relays follow the stream's life on the bus: when it ends, its relays here end at once (not after the
media timeout); when it goes live on another node (its origin died, or the publisher moved), a relay
fed by the old origin is re-attached to the new one, and its viewers stay where they are (a relay fed
by another relay stays: that one follows). A relay whose connection drops (its upstream node died or
was stopped) is re-attached at once to the channel's origin, as the cluster's claims name it.

The node upstream counts the whole audience: how many watch here is sent there (`relayed`), the
latest count per relay, by one task of this object's own, so a slow or dead upstream node never holds
up the node's event delivery; a report that fails is sent again, and every count is sent again every
REPORT_EVERY seconds whatever happens.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Callable
from typing import Any

from bus import Bus, BusError, Message, NoResponder
from bus.follow import follow
from cluster import OriginLocks, RegistryError
from lifecycle.tasks import stop
from sfu.errors import AlreadyPublishing, NodeFull, NotLive, SfuError
from sfu.node import SfuNode
from sfu.relay import Relay, relay_path
from signaling.media.wire import refusal_in, relay_topic

log = logging.getLogger(__name__)

RELAY_TIMEOUT = 6.0  # seconds the node upstream has at most to answer a relay's offer
REPORT_TIMEOUT = 2.0  # seconds for an audience report; a failed one is sent again
REPORT_EVERY = 5.0  # seconds between reports of every relay's audience (and answers with the path upstream)
MAX_UPSTREAMS = 4  # nodes tried for one relay
REATTACH_BUDGET = 6.0  # seconds to re-attach a relay to a stream's new origin
STREAM_TOPICS = ("stream.started", "stream.ended")
STREAM_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


class Relays:
    def __init__(self, node: SfuNode, bus: Bus, node_id: str, origins: OriginLocks,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self._node = node
        self._bus = bus
        self._node_id = node_id
        self._origins = origins
        self._origin_of: dict[str, str] = {}  # channel -> its origin, as last heard (for relays here)
        self._on_change = on_change  # a relay started or ended: the registry should say so now
        self._starting: dict[str, asyncio.Task[None]] = {}  # channel -> the relay being set up
        self._counts: dict[Relay, int] = {}  # audience reports not sent yet (the latest per relay)
        self._wake = asyncio.Event()
        self._reporter: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None
        self._errands: set[asyncio.Task[None]] = set()  # goodbyes upstream, re-attachments to the origin
        self._closed = False
        node.relay_events = self

    async def start(self) -> None:
        subscription = await self._bus.subscribe(*STREAM_TOPICS)  # the first one now: fail at start, not later
        self._follower = asyncio.create_task(
            follow(self._bus, STREAM_TOPICS, self._on_stream_event, "relays", subscription), name="relay-follow")
        self._reporter = asyncio.create_task(self._report_forever(), name="relay-audience")

    async def close(self) -> None:
        """Stop: relays being set up are given up, reports and goodbyes not sent yet are dropped (the
        peer connections closing tell the nodes upstream)."""
        self._closed = True
        tasks = [t for t in (self._reporter, self._follower, *self._starting.values(), *self._errands) if t is not None]
        await stop(tasks, "the relays")
        self._reporter = self._follower = None

    async def ensure(self, channel: str, upstreams: list[str], deadline: float, origin: str = "") -> None:
        """`channel` live on this node: already, or relayed from the first of `upstreams` that takes it
        before `deadline` (the loop's clock). NotLive when none of them carries it; NodeFull when none
        can feed another relay in time. `origin`: the node the stream is published on."""
        if self._node.is_live(channel) and not self._relay_down(channel):
            return
        if self._closed:
            raise NodeFull("this node is shutting down")
        if origin and (channel in self._origin_of or len(self._origin_of) < 10_000):
            self._origin_of[channel] = origin
        await asyncio.shield(self._attach(channel, upstreams, deadline))

    def _attach(self, channel: str, upstreams: list[str], deadline: float) -> asyncio.Task[None]:
        """The relay of `channel` being set up (one at a time per channel)."""
        starting = self._starting.get(channel)
        if starting is None:
            starting = asyncio.create_task(self._start(channel, upstreams, deadline), name=f"relay:{channel}")
            self._starting[channel] = starting
            starting.add_done_callback(functools.partial(self._started, channel))
        return starting

    def _relay_down(self, channel: str) -> bool:
        """Is `channel` relayed here over a connection that dropped?"""
        room = self._node.rooms.get(channel)
        relay = room.publisher if room is not None and room.relay_from is not None else None
        return isinstance(relay, Relay) and relay.pc.connectionState in ("closed", "failed")

    def _started(self, channel: str, task: asyncio.Task[None]) -> None:
        if self._starting.get(channel) is task:
            del self._starting[channel]
        if not task.cancelled() and task.exception() is not None:  # retrieved: its viewers may all have gone
            log.info("no relay of %s: %s", channel, task.exception())
        self._on_change()
        # Still without a source, while the stream is known to be elsewhere (it moved while this attach
        # ran, or this one failed): follow it there, a second later; this ends with the room (at the
        # media timeout, if nothing feeds it).
        failed = not task.cancelled() and task.exception() is not None
        if not self._closed and (failed or self._relay_down(channel)) and len(self._errands) < 256:
            retry = asyncio.create_task(self._follow_later(channel))
            self._errands.add(retry)
            retry.add_done_callback(self._errands.discard)

    async def _follow_later(self, channel: str) -> None:
        await asyncio.sleep(1.0)
        room = self._node.rooms.get(channel)
        origin = self._origin_of.get(channel)
        if self._closed or room is None or room.relay_from is None or not origin or origin == self._node_id:
            return
        if channel not in self._starting and (self._relay_down(channel) or room.relay_from != origin):
            self._attach(channel, [origin], asyncio.get_running_loop().time() + REATTACH_BUDGET)

    async def _start(self, channel: str, upstreams: list[str], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        refusals: list[SfuError] = []
        for upstream in [u for u in upstreams if u != self._node_id][:MAX_UPSTREAMS]:
            left = deadline - loop.time()
            if left <= 0.5:
                break
            try:
                await self._node.relay(channel, upstream, functools.partial(self._ask, upstream, channel,
                                                                            min(RELAY_TIMEOUT, left)))
                return
            except AlreadyPublishing:
                return  # the channel's publisher came here meanwhile: it is live here all the same
            except SfuError as exc:
                refusals.append(exc)
                log.info("node %s cannot feed a relay of %s: %s", upstream, channel, exc)
        if refusals and all(isinstance(r, NotLive) for r in refusals):
            raise NotLive(channel)
        raise NodeFull(f"no node could feed a relay of {channel} in time; try again")

    async def _ask(self, upstream: str, channel: str, timeout: float, offer: str
                   ) -> tuple[str, str, str, list[object]]:
        request = {"op": "subscribe", "channel": channel, "offer": offer, "viewer": None,
                   "client": f"relay:{self._node_id}", "relay": True, "budget": timeout - 0.5}
        answer = await self._request(upstream, request, timeout)
        session, sdp, stream = answer.get("session"), answer.get("answer"), answer.get("stream")
        if not isinstance(session, str) or not isinstance(sdp, str) or not isinstance(stream, str) \
                or not STREAM_ID.fullmatch(stream):
            raise NodeFull(f"node {upstream} answered a relay with something this version cannot read")
        path = answer.get("path")
        return session, sdp, stream, path if isinstance(path, list) else []

    async def _request(self, upstream: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        try:
            answer = await self._bus.request(relay_topic(upstream), request, timeout=timeout)
        except NoResponder:
            raise NotLive(f"node {upstream} is gone") from None
        except BusError as exc:
            raise NodeFull(f"node {upstream} did not answer: {exc}") from None
        refusal = refusal_in(answer)
        if refusal is not None:
            raise refusal
        if "error" in answer:
            raise NodeFull(f"node {upstream} failed: {answer['error']}")
        return answer

    # --- the stream's life, from the bus ---

    def _on_stream_event(self, message: Message) -> None:
        channel, stream = message.payload.get("channel"), message.payload.get("stream")
        room = self._node.rooms.get(channel) if isinstance(channel, str) else None
        if room is None or room.relay_from is None or self._closed:
            return
        if message.topic == "stream.ended":
            if room.stream == stream:
                self._node.end_room(room.name, "the stream ended")
            return
        origin = message.payload.get("node")
        if not isinstance(origin, str) or not isinstance(stream, str) or origin == self._node_id:
            return
        previous = self._origin_of.get(room.name)
        self._origin_of[room.name] = origin
        if room.stream != stream and STREAM_ID.fullmatch(stream):  # one stream per channel: this one now
            room.stream, room.reported_viewers = stream, -1
        if origin == room.relay_from:  # fed by the new origin already (it was a relay, and took the publisher)
            return
        if room.relay_from == previous or previous is None or self._relay_down(room.name):
            log.info("channel %s went live on node %s: its relay here follows it there", room.name, origin)
            self._attach(room.name, [origin], asyncio.get_running_loop().time() + REATTACH_BUDGET)

    async def _reattach_to_origin(self, channel: str) -> None:
        try:
            origin = await self._origins.owner(channel)
        except RegistryError:
            return
        if origin is not None and origin != self._node_id and not self._closed:
            log.info("the relay of %s lost its upstream: it follows the origin, node %s", channel, origin)
            if channel in self._origin_of or len(self._origin_of) < 10_000:
                self._origin_of[channel] = origin
            self._attach(channel, [origin], asyncio.get_running_loop().time() + REATTACH_BUDGET)

    # --- RelayEvents: the node's relay rooms report here ---

    async def relay_viewers(self, relay: Relay, stream: str, viewers: int) -> None:
        if relay.upstream_session and not self._closed:
            self._counts[relay] = viewers
            self._wake.set()

    async def relay_lost(self, relay: Relay) -> None:
        if not self._closed and relay.room not in self._starting and len(self._errands) < 256:
            task = asyncio.create_task(self._reattach_to_origin(relay.room))
            self._errands.add(task)
            task.add_done_callback(self._errands.discard)

    async def relay_ended(self, relay: Relay, stream: str, reason: str) -> None:
        self._counts.pop(relay, None)
        if relay.room not in self._node.rooms:
            self._origin_of.pop(relay.room, None)
        self._on_change()
        if relay.upstream_session and not self._closed and len(self._errands) < 256:
            # Its peer connection closing tells the node upstream too; this says it at once.
            task = asyncio.create_task(self._end_upstream(relay))
            self._errands.add(task)
            task.add_done_callback(self._errands.discard)

    async def _end_upstream(self, relay: Relay) -> None:
        try:
            await self._request(relay.upstream, {"op": "end", "channel": relay.room, "session": relay.upstream_session},
                                REPORT_TIMEOUT)
        except SfuError:
            pass  # gone already

    async def _report_forever(self) -> None:
        while not self._closed:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=REPORT_EVERY)
            except TimeoutError:  # every relay's count, changed or not: one lost on the way is mended
                for room in self._node.rooms.values():
                    if isinstance(room.publisher, Relay) and room.relay_from is not None:
                        self._counts.setdefault(room.publisher, room.audience)
            self._wake.clear()
            counts, self._counts = self._counts, {}
            sends = [self._report(relay, viewers) for relay, viewers in counts.items() if not relay.closed]
            await asyncio.gather(*sends)

    async def _report(self, relay: Relay, viewers: int) -> None:
        try:
            answer = await self._request(relay.upstream, {"op": "relayed", "channel": relay.room,
                                                          "session": relay.upstream_session, "viewers": viewers},
                                         REPORT_TIMEOUT)
            path = answer.get("path")
            room = self._node.rooms.get(relay.room)
            if isinstance(path, list) and room is not None and room.publisher is relay:
                # The path upstream changes when a node there re-attaches: kept fresh within REPORT_EVERY.
                room.relay_path = relay_path(relay.upstream, path)
        except NodeFull as exc:  # no answer in time: sent again with the next round
            log.debug("could not tell node %s the audience of a relay: %s", relay.upstream, exc)
            self._counts.setdefault(relay, viewers)
        except SfuError:
            return  # the node or its session upstream is gone: the relay ends by itself
        except Exception:  # whatever it was, the reporter goes on
            log.exception("reporting a relay's audience to node %s failed", relay.upstream)
