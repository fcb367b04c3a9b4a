"""The media plane of a front door without media of its own: the cluster's nodes, over the bus.

Placement reads the registry: a channel's publisher goes to the node that already carries the channel
(where the takeover rules hold) or else to the least-loaded node; its viewers go to the node that carries
it. A session's id names its node (`<node id, URL-quoted>.<session id>`), so PATCH and DELETE reach the
right node through any front door.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import quote, unquote

from bus import Bus, BusError
from cluster import LiveNode, NodeRecord, NodeRegistry, RegistryError
from sfu.errors import NodeFull, NotLive, UnknownSession
from signaling.auth.roles import Principal
from signaling.errors import Unavailable
from signaling.media.control import control_topic
from signaling.media.plane import MediaPlane, SessionState, Ticket
from signaling.media.wire import principal_out, refusal_in

log = logging.getLogger(__name__)

REGISTRY_TIMEOUT = 3.0  # seconds
CONTROL_TIMEOUT = 10.0  # seconds: a negotiation gathers candidates and may wait for a busy node


class ClusterPlane(MediaPlane):
    def __init__(self, bus: Bus, registry: NodeRegistry, takeover_after: float) -> None:
        self._bus = bus
        self._registry = registry
        self.takeover_after = takeover_after

    async def publish(self, channel: str, offer: str, owner: str, client: str) -> Ticket:
        nodes = await self._nodes()
        node = _carrying(nodes, channel) or _least_loaded(nodes, viewer=False)
        answer = await self._call(node.id, {"op": "publish", "channel": channel, "offer": offer, "owner": owner,
                                            "client": client})
        return _ticket(node.id, answer)

    async def subscribe(self, channel: str, offer: str, viewer: Principal | None, client: str) -> Ticket:
        node = _carrying(await self._nodes(), channel)
        if node is None:
            raise NotLive(channel)
        answer = await self._call(node.id, {"op": "subscribe", "channel": channel, "offer": offer,
                                            "viewer": principal_out(viewer), "client": client})
        return _ticket(node.id, answer)

    async def state(self, channel: str, session: str) -> SessionState:
        node_id, local = _split(session)
        answer = await self._call(node_id, {"op": "state", "channel": channel, "session": local}, missing=True)
        return SessionState("publish" if answer["kind"] == "publish" else "subscribe", str(answer["etag"]))

    async def trickle(self, session: str, fragment: str) -> None:
        node_id, local = _split(session)
        await self._call(node_id, {"op": "trickle", "session": local, "fragment": fragment}, missing=True)

    async def restart_ice(self, session: str, fragment: str) -> tuple[str, str]:
        node_id, local = _split(session)
        answer = await self._call(node_id, {"op": "restart_ice", "session": local, "fragment": fragment},
                                  missing=True)
        return str(answer["answer"]), str(answer["etag"])

    async def end(self, session: str) -> None:
        node_id, local = _split(session)
        await self._call(node_id, {"op": "end", "session": local}, missing=True)

    async def _nodes(self) -> list[NodeRecord]:
        try:
            async with asyncio.timeout(REGISTRY_TIMEOUT):
                live: list[LiveNode] = await self._registry.live()
        except (RegistryError, TimeoutError) as exc:  # the registry's store is down
            log.warning("could not read the node registry: %s", exc)
            raise Unavailable("no media node can be reached right now", retry_after=3) from None
        return [n.record for n in live]

    async def _call(self, node_id: str, request: dict[str, Any], missing: bool = False) -> dict[str, Any]:
        """Ask node `node_id`. For a session's node (`missing`), a node the registry does not list, or one
        that does not answer, is gone and so is the session; else it is unavailable for now."""
        if missing and node_id not in {n.id for n in await self._nodes()}:
            raise UnknownSession(node_id)
        try:
            answer = await self._bus.request(control_topic(node_id), request, timeout=CONTROL_TIMEOUT)
        except BusError as exc:
            if missing:
                raise UnknownSession(node_id) from None
            log.warning("media node %s did not answer %s: %s", node_id, request.get("op"), exc)
            raise Unavailable("the media node did not answer; try again", retry_after=3) from None
        refusal = refusal_in(answer)
        if refusal is not None:
            raise refusal
        if "error" in answer:
            log.warning("media node %s failed %s: %s", node_id, request.get("op"), answer["error"])
            raise Unavailable("the media node failed; try again", retry_after=3)
        return answer


def _ticket(node_id: str, answer: dict[str, Any]) -> Ticket:
    return Ticket(f"{quote(node_id, safe='')}.{answer['session']}", str(answer["etag"]), str(answer["answer"]))


def _split(session: str) -> tuple[str, str]:
    node, dot, local = session.rpartition(".")
    if not dot or not node or not local:
        raise UnknownSession(session)
    return unquote(node), local


def _carrying(nodes: list[NodeRecord], channel: str) -> NodeRecord | None:
    for node in nodes:
        if any(stream.channel == channel for stream in node.streams):
            return node
    return None


def _least_loaded(nodes: list[NodeRecord], viewer: bool) -> NodeRecord:
    open_nodes = [n for n in nodes if not n.draining]
    if not open_nodes:
        raise NodeFull("no media node is taking new sessions")

    def load(node: NodeRecord) -> tuple[float, int, str]:
        """The busier of its loop and its viewer places; then fewer streams; then by name."""
        share = (node.load.viewers + node.load.pending) / node.max_viewers if node.max_viewers else 1.0
        return max(node.load.loop, share), node.load.publishers, node.id

    return min(open_nodes, key=load)
