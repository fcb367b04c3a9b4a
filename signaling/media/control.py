"""A media node's control endpoint on the bus: the front door's requests, run on this node's own plane.

    node.<id>.control  {"op": "publish", "channel", "offer", "owner", "client", "budget"}     -> ticket
                       {"op": "subscribe", "channel", "offer", "viewer", "client", "budget",
                        "upstreams"?, "origin"?}                                              -> ticket
                       {"op": "state", "channel", "session"}                                  -> {"kind", "etag"}
                       {"op": "trickle" | "restart_ice", "channel", "session", "fragment"}    -> {} | {"answer", "etag"}
                       {"op": "end", "channel", "session"}                                    -> {}
                       {"op": "layers", "channel", "session"}                       -> {"choices", "current", "auto"}
                       {"op": "layer", "channel", "session", "layer"}               -> {"choices", "current", "auto"}
    node.<id>.relay    {"op": "subscribe", "channel", "offer", "client", "budget", "relay"}  -> ticket + {"stream", "path"}
                       {"op": "relayed", "channel", "session", "viewers"}                     -> {"path"}
                       {"op": "end", "channel", "session"}                                    -> {}

A subscribe with `upstreams` (a front door placing a viewer on a node that may not carry the stream)
first makes the stream live here, relayed from one of those nodes (signaling.media.relays). The relay
topic is for other nodes: a relay asking for the stream (it holds no viewer place) and saying how
many watch through it. A publish first claims the channel for this node (cluster.origins;
`steal_from` names a node the front door found dead or draining: its claim passes only if this node
finds nobody serving it either).

A refusal answers {"refused": <SfuError class name>, "detail"}; a request that cannot be read,
{"refused": "BadOffer"}. A negotiation that took longer than its `budget` (seconds) is ended and
refused: the front door has given up on it and told its client to try again.

The bus is the cluster's own network, trusted like it (Redis with a password, on a private network):
what comes over it is checked for shape and bounds, not for who sent it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from bus import Bus, BusError, Message, NoResponder
from lifecycle.tasks import STOP_WITHIN, stop
from sfu.errors import BadOffer, NodeFull, NotLive, SfuError
from signaling.auth.roles import Principal
from signaling.media.claiming import ClaimingPlane
from signaling.media.plane import Ticket
from signaling.media.relays import MAX_UPSTREAMS, Relays
from signaling.media.wire import control_topic, principal_in, refusal_out, relay_topic

MAX_AUDIENCE = 10**9
NODE_ID = re.compile(r"[^\s]{1,128}")
RELAY_CONCURRENCY = 16  # relay requests answered at once (each is one negotiation)


class NodeControl:
    def __init__(self, plane: ClaimingPlane, bus: Bus, node_id: str, relays: Relays,
                 published: Callable[[], Awaitable[None]] | None = None) -> None:
        self._plane = plane
        self._bus = bus
        self._node_id = node_id
        self._relays = relays
        self._published = published  # awaited before a publish is answered: the registry shows the channel here
        self._serving: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._serving = [await self._bus.serve(control_topic(self._node_id), self._handle),
                         await self._bus.serve(relay_topic(self._node_id), self._handle_relay, RELAY_CONCURRENCY)]

    async def close_doors(self) -> None:
        """Take no more requests from front doors (those being answered are cancelled): to them this
        node is gone, and the claims of its streams may pass on. Other nodes' relays are still served."""
        if self._serving:
            await stop(self._serving[:1], "the node's door topic", STOP_WITHIN + 2)  # (see Bus.close)

    async def close(self) -> None:
        """Take no more requests (those being answered are cancelled)."""
        await stop(self._serving, "the node's control topics", STOP_WITHIN + 2)
        self._serving = []

    async def _handle(self, message: Message) -> dict[str, Any]:
        return await self._answer(message.payload, from_node=False)

    async def _handle_relay(self, message: Message) -> dict[str, Any]:
        return await self._answer(message.payload, from_node=True)

    async def _answer(self, payload: dict[str, Any], from_node: bool) -> dict[str, Any]:
        try:
            if from_node:
                return await self._run_relay(payload)
            return await self._run(payload)
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
            upstreams = p.get("upstreams")
            if upstreams is not None and (not isinstance(upstreams, list) or not upstreams or not all(
                    isinstance(u, str) and NODE_ID.fullmatch(u) for u in upstreams)):
                raise ValueError("upstreams must be a list of node ids")
            origin = p.get("origin", "")
            if not isinstance(origin, str) or (origin and not NODE_ID.fullmatch(origin)):
                raise ValueError("origin must be a node id")
            budget = float(p["budget"])
            ticket = await self._within(budget, self._subscribe(
                channel, str(p["offer"]), principal_in(p.get("viewer")), str(p["client"]),
                upstreams[:MAX_UPSTREAMS] if upstreams else [], budget, origin))
            return {"session": ticket.session, "etag": ticket.etag, "answer": ticket.answer}
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
        if op in ("layers", "layer"):
            layers = (await plane.layers(channel, session) if op == "layers"
                      else await plane.choose_layer(channel, session, str(p["layer"])))
            return {"choices": list(layers.choices), "current": layers.current, "auto": layers.auto}
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

    async def _subscribe(self, channel: str, offer: str, viewer: Principal | None, client: str, upstreams: list[str],
                         budget: float, origin: str) -> Ticket:
        if upstreams:  # half the budget at most for the relay: the viewer's own negotiation needs the rest
            await self._relays.ensure(channel, upstreams, asyncio.get_running_loop().time() + budget / 2, origin)
        return await self._plane.subscribe(channel, offer, viewer, client)

    async def _run_relay(self, p: dict[str, Any]) -> dict[str, Any]:
        """What another node's relay asks."""
        plane, op = self._plane, p.get("op")
        channel, session = str(p["channel"]), str(p.get("session", ""))
        if op == "subscribe" and p.get("relay") is True:
            ticket = await self._within(float(p["budget"]), plane.subscribe(
                channel, str(p["offer"]), None, str(p["client"])[:140], relay=True))
            room = plane.node.rooms.get(channel)
            if room is None:
                await plane.end_quietly(ticket.session)
                raise NotLive(channel)
            return {"session": ticket.session, "etag": ticket.etag, "answer": ticket.answer, "stream": room.stream,
                    "path": list(room.relay_path)}
        if op == "relayed":
            viewers = p["viewers"]
            if not isinstance(viewers, int) or isinstance(viewers, bool) or not 0 <= viewers <= MAX_AUDIENCE:
                raise ValueError("viewers must be a count")
            plane.node.session(session, channel)
            plane.node.set_relayed(session, viewers)
            room = plane.node.rooms.get(channel)
            return {"path": list(room.relay_path) if room is not None else []}
        if op == "end":
            await plane.end(channel, session)
            return {}
        raise ValueError(f"unknown relay operation {op!r}")

    async def _within(self, budget: float, negotiation: Awaitable[Ticket]) -> Ticket:
        loop = asyncio.get_running_loop()
        started = loop.time()
        ticket = await negotiation
        if loop.time() - started > budget:
            await self._plane.end_quietly(ticket.session)
            raise NodeFull(f"this node took longer than {budget:g} s to answer; try again")
        return ticket
