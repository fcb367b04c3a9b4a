"""A media node's control endpoint on the bus: the front door's requests, run on this node's own plane.

    node.<id>.control  {"op": "publish", "channel", "offer", "owner", "client", "budget"}     -> ticket
                       {"op": "subscribe", "channel", "offer", "viewer", "client", "budget"}  -> ticket
                       {"op": "state", "channel", "session"}                                  -> {"kind", "etag"}
                       {"op": "trickle" | "restart_ice", "channel", "session", "fragment"}    -> {} | {"answer", "etag"}
                       {"op": "end", "channel", "session"}                                    -> {}
A publish first claims the channel for this node (cluster.origins; `steal_from` names a node the front
door found dead). A refusal answers {"refused": <SfuError class name>, "detail"}; a request that cannot be read,
{"refused": "BadOffer"}. A negotiation that took longer than its `budget` (seconds) is ended and
refused: the front door has given up on it and told its client to try again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from bus import Bus, Message
from cluster import OriginLocks, RegistryError
from sfu.errors import AlreadyPublishing, BadOffer, NodeFull, SfuError
from signaling.media.local import LocalPlane
from signaling.media.plane import Ticket
from signaling.media.wire import principal_in, refusal_out


def control_topic(node_id: str) -> str:
    return f"node.{node_id}.control"


class NodeControl:
    def __init__(self, plane: LocalPlane, bus: Bus, node_id: str, locks: OriginLocks,
                 published: Callable[[], Awaitable[None]] | None = None) -> None:
        self._plane = plane
        self._bus = bus
        self._node_id = node_id
        self._locks = locks
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
            await self._claim(channel, str(steal_from) if steal_from else None)
            try:
                ticket = await self._within(float(p["budget"]), plane.publish(
                    channel, str(p["offer"]), str(p["owner"]), str(p["client"])))
            except BaseException:
                if not plane.node.is_live(channel):  # nothing of the channel here: let the claim go
                    await self._locks.release(channel, self._node_id)
                raise
            if self._published is not None:
                await self._published()
            return {"session": ticket.session, "etag": ticket.etag, "answer": ticket.answer}
        if op == "subscribe":
            ticket = await self._within(float(p["budget"]), plane.subscribe(
                channel, str(p["offer"]), principal_in(p.get("viewer")), str(p["client"])))
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
        raise ValueError(f"unknown control operation {op!r}")

    async def _claim(self, channel: str, steal_from: str | None) -> None:
        """Become the channel's origin, or refuse: another node holds it (one publisher per channel)."""
        try:
            origin = await self._locks.claim(channel, self._node_id, steal_from)
        except RegistryError:
            raise NodeFull("the cluster's origin claims cannot be reached; try again") from None
        if origin != self._node_id:
            raise AlreadyPublishing(f"{channel} is published on node {origin}")

    async def _within(self, budget: float, negotiation: Awaitable[Ticket]) -> Ticket:
        loop = asyncio.get_running_loop()
        started = loop.time()
        ticket = await negotiation
        if loop.time() - started > budget:
            await self._plane.end_quietly(ticket.session)
            raise NodeFull(f"this node took longer than {budget:g} s to answer; try again")
        return ticket
