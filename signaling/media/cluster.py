"""The media plane of a front door without media of its own: the cluster's nodes, over the bus.

Placement reads the registry: a channel's publisher goes to the node that already carries the channel
(where the takeover rules hold) unless that node is draining, else to a node relaying it (whose viewers
then stay), else to the least-loaded node. Its viewers go to a node that carries it and has room (the
origin first, then its relays: as few relays as the audience needs), else to the least-loaded node with
room, which relays the stream from the origin or from a node relaying it already; only when every node
is full is a viewer refused (503). A session's id names its node (`<node id, URL-quoted>.<session id>`),
so PATCH and DELETE reach the right node through any front door; every request about a session also
names its channel, checked on the node.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

from bus import Bus, BusError, NoResponder
from cluster import ANNOUNCE_INTERVAL, NodeRecord, OriginLocks, RegistryError
from sfu.errors import NodeFull, NotLive, UnknownSession
from signaling.auth.roles import Principal
from signaling.cluster.directory import NodeDirectory, carrying, relaying
from signaling.errors import Unavailable
from signaling.media.plane import Layers, MediaPlane, SessionState, Ticket
from signaling.media.wire import control_topic, principal_out, refusal_in

log = logging.getLogger(__name__)

CONTROL_TIMEOUT = 10.0  # seconds: a negotiation gathers candidates and may wait for a busy node
NODE_BUDGET = CONTROL_TIMEOUT - 2.0  # a node gives up (and ends the session) on work that took longer
MAX_RELAYS_REMEMBERED = 10_000  # relays placed lately, kept until the registry shows them


class ClusterPlane(MediaPlane):
    def __init__(self, bus: Bus, directory: NodeDirectory, origins: OriginLocks, takeover_after: float) -> None:
        self._bus = bus
        self._directory = directory
        self._origins = origins
        self.takeover_after = takeover_after
        self._placed = RecentPlacements()  # publishers
        self._viewers_placed = RecentPlacements()
        self._relays_placed: dict[tuple[str, str], float] = {}  # (channel, node id) -> when a relay went there

    async def publish(self, channel: str, offer: str, owner: str, client: str) -> Ticket:
        """To the channel's origin (where the takeover rules hold), else a node that carries it, else the
        least-loaded node; a chosen node found dead is left out and the claim it held passes on."""
        request = {"op": "publish", "channel": channel, "offer": offer, "owner": owner, "client": client,
                   "budget": NODE_BUDGET}
        dead: str | None = None
        full: set[str] = set()  # nodes that refused it for want of room
        for _ in range(3):
            nodes = await self._directory.nodes()
            by_id = {n.id: n for n in nodes}
            try:
                origin = await self._origins.owner(channel)
            except RegistryError:
                raise Unavailable("no media node can be reached right now", retry_after=3) from None
            relays = [n for n in relaying(nodes, channel) if not n.draining and n.id != dead and n.id not in full]
            node = by_id.get(origin or "") or carrying(nodes, channel)
            # A claim held by a node that is gone or draining may pass on (the node checks it is dead).
            holder = by_id.get(origin or "")
            steal = dead or (origin if origin is not None and (holder is None or holder.draining) else None)
            if node is None or node.draining or node.id == dead or node.id in full:  # a relaying node keeps its viewers
                node = relays[0] if relays else _least_loaded([n for n in nodes if n.id not in full and n.id != dead],
                                                              self._unannounced(self._placed))
            try:
                answer = await self._call(node.id, {**request, "steal_from": steal}, dead_raises=True)
            except _NodeGone:
                dead = node.id  # left out of the next reading: the next node may take its claim
                continue
            except NodeFull:
                if origin == node.id:
                    raise  # the channel's own node: the takeover rules hold there
                full.add(node.id)
                continue
            self._placed.add(node.id)
            return _ticket(node.id, answer)
        raise Unavailable("the media nodes chosen are gone; try again", retry_after=1)

    async def subscribe(self, channel: str, offer: str, viewer: Principal | None, client: str) -> Ticket:
        request = {"op": "subscribe", "channel": channel, "offer": offer, "viewer": principal_out(viewer),
                   "client": client, "budget": NODE_BUDGET}
        passed: set[str] = set()  # nodes that refused this viewer (full, or their relay just ended)
        for _ in range(3):
            nodes = await self._directory.nodes()
            origin = carrying(nodes, channel)
            if origin is None:
                raise NotLive(channel)
            # Nodes relaying it, by the registry or by this door's placements it does not show yet.
            relays = relaying(nodes, channel)
            listed = {origin.id, *(n.id for n in relays)}
            relays += [n for n in nodes if n.id not in listed and self._relayed_here(channel, n.id)]
            # A draining node takes no viewer but may still feed relays while its own move elsewhere.
            every_carrier = [origin, *relays]
            carriers = [n for n in every_carrier if not n.draining]
            open_carriers = [n for n in carriers if n.id not in passed and self._has_room(n)]
            if open_carriers:
                node = open_carriers[0]
            else:
                carrier_ids = {n.id for n in carriers}
                others = [n for n in nodes if n.id not in carrier_ids and n.id not in passed and not n.draining
                          and self._has_room(n)]
                if not others:
                    raise NodeFull("every media node has its maximum of viewers; try again shortly")
                node = _least_loaded(others, self._unannounced(self._placed))
            upstreams = [n.id for n in (*carriers, *(n for n in every_carrier if n.draining)) if n.id != node.id]
            if node.id != origin.id and not upstreams:
                raise NodeFull("no media node can feed another relay now; try again shortly")
            # A node that carries the stream now may not by the time the request arrives (a relay that
            # ended): it relays it again from these.
            extra = {"upstreams": upstreams, "origin": origin.id} if node.id != origin.id else {}
            try:
                answer = await self._call(node.id, {**request, **extra})
            except NodeFull:
                passed.add(node.id)
                continue
            except NotLive:
                if node.id == origin.id:
                    raise
                passed.add(node.id)
                continue
            self._viewers_placed.add(node.id)
            if node not in carriers:
                self._placed.add(node.id)  # a stream more there, until its next announcement says so
                self._relays_placed[(channel, node.id)] = time.monotonic()
            return _ticket(node.id, answer)
        raise NodeFull("the media nodes chosen were full; try again shortly")

    def _relayed_here(self, channel: str, node_id: str) -> bool:
        """Did this door have `channel` relayed to `node_id` so lately that its record may not show it?"""
        placed = self._relays_placed.get((channel, node_id))
        if placed is None:
            return False
        if time.monotonic() - placed > RecentPlacements.SPAN or len(self._relays_placed) > MAX_RELAYS_REMEMBERED:
            self._relays_placed = {k: t for k, t in self._relays_placed.items()
                                   if time.monotonic() - t <= RecentPlacements.SPAN}
            return (channel, node_id) in self._relays_placed
        return True

    def _has_room(self, node: NodeRecord) -> bool:
        """Room for one more viewer, counting those placed there since the node last announced itself."""
        placed = self._viewers_placed.since(node.id, self._directory.heard_at(node.id))
        return node.load.viewers + node.load.pending_viewers + placed < node.max_viewers

    def _unannounced(self, placements: RecentPlacements) -> Callable[[str], int]:
        """How many of `placements` each node's last record does not count yet."""
        return lambda node_id: placements.since(node_id, self._directory.heard_at(node_id))

    async def state(self, channel: str, session: str) -> SessionState:
        answer = await self._session_call(session, {"op": "state", "channel": channel})
        return SessionState("publish" if answer.get("kind") == "publish" else "subscribe", _text(answer, "etag"))

    async def trickle(self, channel: str, session: str, fragment: str) -> None:
        await self._session_call(session, {"op": "trickle", "channel": channel, "fragment": fragment})

    async def restart_ice(self, channel: str, session: str, fragment: str) -> tuple[str, str]:
        answer = await self._session_call(session, {"op": "restart_ice", "channel": channel, "fragment": fragment})
        return _text(answer, "answer"), _text(answer, "etag")

    async def end(self, channel: str, session: str) -> None:
        await self._session_call(session, {"op": "end", "channel": channel})

    async def layers(self, channel: str, session: str) -> Layers:
        return _layers(await self._session_call(session, {"op": "layers", "channel": channel}))

    async def choose_layer(self, channel: str, session: str, layer: str) -> Layers:
        return _layers(await self._session_call(session, {"op": "layer", "channel": channel, "layer": layer}))

    async def _session_call(self, session: str, request: dict[str, Any]) -> dict[str, Any]:
        node, _, local = session.rpartition(".")
        if not node or not local:
            raise UnknownSession(session)
        return await self._call(unquote(node), {**request, "session": local}, missing=True)

    async def _call(self, node_id: str, request: dict[str, Any], missing: bool = False,
                    dead_raises: bool = False) -> dict[str, Any]:
        """Ask node `node_id`. A node nobody serves is gone: its sessions with it (`missing`), else the
        request is refused as unavailable; a node that is there but does not answer is unavailable."""
        try:
            answer = await self._bus.request(control_topic(node_id), request, timeout=CONTROL_TIMEOUT)
        except NoResponder:
            self._directory.gone(node_id)
            if dead_raises:
                raise _NodeGone(node_id) from None
            if missing:
                raise UnknownSession(node_id) from None
            raise Unavailable("the media node is gone; try again", retry_after=1) from None
        except BusError as exc:
            log.warning("media node %s did not answer %s: %s", node_id, request.get("op"), exc)
            raise Unavailable("the media node did not answer; try again", retry_after=3) from None
        refusal = refusal_in(answer)
        if refusal is not None:
            raise refusal
        if "error" in answer:
            log.warning("media node %s failed %s: %s", node_id, request.get("op"), answer["error"])
            raise Unavailable("the media node failed; try again", retry_after=3)
        return answer


class RecentPlacements:
    """What this door placed on each node lately: not in the node's record until its next beat."""

    SPAN = ANNOUNCE_INTERVAL * 3  # seconds a placement is kept (a record is at most NODE_TTL old)

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._at: dict[str, deque[float]] = {}

    def add(self, node_id: str) -> None:
        self._at.setdefault(node_id, deque()).append(self._clock())

    def since(self, node_id: str, moment: float) -> int:
        """Placements on `node_id` after `moment` (its record's announcement: the record counts the rest)."""
        times = self._at.get(node_id)
        if times is None:
            return 0
        horizon = self._clock() - self.SPAN
        while times and times[0] < horizon:
            times.popleft()
        if not times:
            del self._at[node_id]  # bounded by the live nodes: an idle node's entry goes
            return 0
        return sum(1 for at in times if at > moment)


class _NodeGone(Exception):
    """Nobody serves the node a request went to."""


def _text(answer: dict[str, Any], key: str) -> str:
    value = answer.get(key)
    if not isinstance(value, str):
        log.warning("a media node answered without %r", key)
        raise Unavailable("the media node answered something this version cannot read", retry_after=3)
    return value


def _ticket(node_id: str, answer: dict[str, Any]) -> Ticket:
    return Ticket(f"{quote(node_id, safe='')}.{_text(answer, 'session')}", _text(answer, "etag"),
                  _text(answer, "answer"))


def _least_loaded(nodes: list[NodeRecord], placed: Callable[[str], int] = lambda node_id: 0) -> NodeRecord:
    """The node to take a new stream: the least busy (loop CPU or viewer places, in steps of a tenth, so
    noise does not decide), then the one with the fewest streams counting those `placed` there since
    its last announcement (a burst of offers between two beats is spread, not heaped on one node)."""
    open_nodes = [n for n in nodes if not n.draining]
    if not open_nodes:
        raise NodeFull("no media node is taking new sessions")

    def load(node: NodeRecord) -> tuple[int, int, str]:
        share = (node.load.viewers + node.load.pending_viewers) / node.max_viewers if node.max_viewers else 1.0
        return int(max(node.load.loop, share) * 10), node.load.publishers + placed(node.id), node.id

    return min(open_nodes, key=load)


def _layers(answer: dict[str, Any]) -> Layers:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        log.warning("a media node answered layers without choices")
        raise Unavailable("the media node answered something this version cannot read", retry_after=3)
    return Layers(tuple(choices), _text(answer, "current"), bool(answer.get("auto", True)))
