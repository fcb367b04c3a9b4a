"""A media node's control endpoint on the bus: the front door's requests, run on this node's own plane.

    node.<id>.control  {"op": "publish", "channel", "offer", "owner", "client", "budget"}     -> ticket
                       {"op": "subscribe", "channel", "offer", "viewer", "client", "budget",
                        "stream"?, "upstreams"?, "relay"?}                                    -> ticket
                       {"op": "state", "channel", "session"}                                  -> {"kind", "etag"}
                       {"op": "trickle" | "restart_ice", "channel", "session", "fragment"}    -> {} | {"answer", "etag"}
                       {"op": "end", "channel", "session"}                                    -> {}
                       {"op": "relayed", "channel", "session", "viewers"}                     -> {}
A subscribe with `upstreams` (a front door placing a viewer on a node that does not carry the stream
yet) first relays the stream `stream` here from one of those nodes (signaling.media.relays); one with
`relay` is such a relay asking this node for the stream; `relayed` is a relay saying how many watch
through it. A publish first claims the channel for this node (cluster.origins; `steal_from` names a node the front
door found dead or draining: its claim passes only if this node finds nobody serving it either). A refusal answers {"refused": <SfuError class name>, "detail"}; a request that cannot be read,
{"refused": "BadOffer"}. A negotiation that took longer than its `budget` (seconds) is ended and
refused: the front door has given up on it and told its client to try again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from bus import Bus, BusError, Message, NoResponder
from sfu.errors import BadOffer, NodeFull, SfuError
from signaling.auth.roles import Principal
from signaling.media.claiming import ClaimingPlane
from signaling.media.plane import Ticket
from signaling.media.relays import MAX_UPSTREAMS, Relays
from signaling.media.wire import control_topic, principal_in, refusal_out

MAX_AUDIENCE = 10**9


class NodeControl:
    def __init__(self, plane: ClaimingPlane, bus: Bus, node_id: str, relays: Relays,
                 published: Callable[[], Awaitable[None]] | None = None) -> None:
        self._plane = plane
        self._bus = bus
        self._node_id = node_id
        self._relays = relays
        self._published = published  # awaited before a publish is answered: the registry shows the channel here
        self._serving: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._serving = await self._bus.serve(control_topic(self._node_id), self._handle)

    async def close(self) -> None:
        """Take no more requests (those being answered are cancelled)."""
        if self._serving is not None:
            self._serving.cancel()
            await asyncio.gather(self._serving, return_exceptions=True)
            self._serving = None

    async def _handle(self, message: Message) -> dict[str, Any]:
        try:
            return await self._run(message.payload)
        except SfuError as exc:
            return refusal_out(exc)
        except (KeyError, TypeError, ValueError) as exc:
            return refusal_out(BadOffer(f"a control request this node cannot read: {exc}"))

    async def _run(self, p: dict[str, Any]) -> dict[str, Any]:
        plane, op = self._plane, p.get("op")
        channel, session = str(p["channel"]), str(p.get("session", ""))
        if op == "publish":
            steal_from = p.get("steal_from")
            dead = str(steal_from) if steal_from and await self._is_dead(str(steal_from)) else None
            ticket = await self._within(float(p["budget"]), plane.publish(
                channel, str(p["offer"]), str(p["owner"]), str(p["client"]), steal_from=dead))
            if self._published is not None:
                await self._published()
            return {"session": ticket.session, "etag": ticket.etag, "answer": ticket.answer}
        if op == "ping":
            return {}
        if op == "subscribe":
            upstreams = p.get("upstreams") or []
            if not isinstance(upstreams, list):
                raise ValueError("upstreams must be a list of node ids")
            ticket = await self._within(float(p["budget"]), self._subscribe(
                channel, str(p["offer"]), principal_in(p.get("viewer")), str(p["client"]), p.get("relay") is True,
                str(p.get("stream", "")), [str(u) for u in upstreams[:MAX_UPSTREAMS]]))
            return {"session": ticket.session, "etag": ticket.etag, "answer": ticket.answer}
        if op == "relayed":
            viewers = p["viewers"]
            if not isinstance(viewers, int) or not 0 <= viewers <= MAX_AUDIENCE:
                raise ValueError("viewers must be a count")
            plane.node.session(session, channel)
            plane.node.set_relayed(session, viewers)
            return {}
        if op == "state":
            state = await plane.state(channel, session)
            return {"kind": state.kind, "etag": state.etag}
        if op == "trickle":
            await plane.trickle(channel, session, str(p["fragment"]))
            return {}
        if op == "restart_ice":
            answer, etag = await plane.restart_ice(channel, session, str(p["fragment"]))
            return {"answer": answer, "etag": etag}
        if op == "end":
            await plane.end(channel, session)
            return {}
        raise ValueError(f"unknown control operation {op!r}")

    async def _is_dead(self, node_id: str) -> bool:
        """Does nobody serve `node_id`'s control topic? Checked here, not taken on a front door's word:
        a claim passes from a node only when it is surely gone."""
        if node_id == self._node_id:
            return False
        try:
            await self._bus.request(control_topic(node_id), {"op": "ping", "channel": ""}, timeout=1.0)
        except NoResponder:
            return True
        except BusError:
            return False  # there, but slow: not dead
        return False

    async def _subscribe(self, channel: str, offer: str, viewer: Principal | None, client: str, relay: bool,
                         stream: str, upstreams: list[str]) -> Ticket:
        if upstreams:
            await self._relays.ensure(channel, stream, upstreams)
        return await self._plane.subscribe(channel, offer, viewer, client, relay=relay)

    async def _within(self, budget: float, negotiation: Awaitable[Ticket]) -> Ticket:
        loop = asyncio.get_running_loop()
        started = loop.time()
        ticket = await negotiation
        if loop.time() - started > budget:
            await self._plane.end_quietly(ticket.session)
            raise NodeFull(f"this node took longer than {budget:g} s to answer; try again")
        return ticket
