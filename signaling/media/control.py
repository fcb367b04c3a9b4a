"""A media node's control endpoint on the bus: the front door's requests, run on this node's own plane.

    node.<id>.control  {"op": "publish", "channel", "offer", "owner", "client"}     -> ticket
                       {"op": "subscribe", "channel", "offer", "viewer", "client"}  -> ticket
                       {"op": "state", "channel", "session"}                        -> {"kind", "etag"}
                       {"op": "trickle" | "restart_ice", "session", "fragment"}     -> {} | {"answer", "etag"}
                       {"op": "end", "session"}                                     -> {}
A refusal answers {"refused": <SfuError class name>, "detail"}.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bus import Bus, Message
from sfu.errors import SfuError
from signaling.media.local import LocalPlane
from signaling.media.wire import principal_in, refusal_out


def control_topic(node_id: str) -> str:
    return f"node.{node_id}.control"


class NodeControl:
    def __init__(self, plane: LocalPlane, bus: Bus, node_id: str,
                 published: Callable[[], Awaitable[None]] | None = None) -> None:
        self._plane = plane
        self._bus = bus
        self._node_id = node_id
        self._published = published  # awaited before a publish is answered: the registry shows the channel here

    async def start(self) -> None:
        await self._bus.serve(control_topic(self._node_id), self._handle)

    async def _handle(self, message: Message) -> dict[str, Any]:
        try:
            return await self._run(message.payload)
        except SfuError as exc:
            return refusal_out(exc)

    async def _run(self, p: dict[str, Any]) -> dict[str, Any]:
        plane, op = self._plane, p.get("op")
        if op == "publish":
            ticket = await plane.publish(str(p["channel"]), str(p["offer"]), str(p["owner"]), str(p["client"]))
            if self._published is not None:
                await self._published()
            return {"session": ticket.session, "etag": ticket.etag, "answer": ticket.answer}
        if op == "subscribe":
            ticket = await plane.subscribe(str(p["channel"]), str(p["offer"]), principal_in(p.get("viewer")),
                                           str(p["client"]))
            return {"session": ticket.session, "etag": ticket.etag, "answer": ticket.answer}
        if op == "state":
            state = await plane.state(str(p["channel"]), str(p["session"]))
            return {"kind": state.kind, "etag": state.etag}
        if op == "trickle":
            await plane.trickle(str(p["session"]), str(p["fragment"]))
            return {}
        if op == "restart_ice":
            answer, etag = await plane.restart_ice(str(p["session"]), str(p["fragment"]))
            return {"answer": answer, "etag": etag}
        if op == "end":
            await plane.end(str(p["session"]))
            return {}
        raise ValueError(f"unknown control operation {op!r}")
