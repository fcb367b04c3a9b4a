"""The streams this node carries for its viewers from other nodes (the receiving ends of relays).

A front door that places a viewer here although the stream is published elsewhere names the nodes
that can feed it (`upstreams`: the origin first, then nodes relaying it already, so relays may chain).
`ensure` makes the stream live here from the first of them that takes the relay: the offer goes
upstream as a `subscribe` with `relay` set, the answer comes back, and the node's room fills as from a
publisher. One relay per channel is set up at a time, however many viewers arrive at once.

The node upstream counts the whole audience: how many watch here is sent there (`relayed`), the
latest count per relay, by one task of this object's own, so a slow or dead upstream node never holds
up the node's event delivery.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from bus import Bus, BusError, NoResponder
from sfu.errors import NodeFull, NotLive, SfuError
from sfu.node import SfuNode
from sfu.relay import Relay
from signaling.media.wire import control_topic, refusal_in

log = logging.getLogger(__name__)

RELAY_TIMEOUT = 6.0  # seconds the node upstream has to answer a relay's offer
REPORT_TIMEOUT = 2.0  # seconds for an audience report; the next one carries the count again
MAX_UPSTREAMS = 4  # nodes tried for one relay


class Relays:
    def __init__(self, node: SfuNode, bus: Bus, node_id: str) -> None:
        self._node = node
        self._bus = bus
        self._node_id = node_id
        self._starting: dict[str, asyncio.Future[None]] = {}  # channel -> the relay being set up
        self._counts: dict[Relay, int] = {}  # audience reports not sent yet (the latest per relay)
        self._wake = asyncio.Event()
        self._reporter: asyncio.Task[None] | None = None
        self._ending: set[asyncio.Task[None]] = set()
        node.relay_events = self

    def start(self) -> None:
        self._reporter = asyncio.create_task(self._report_forever(), name="relay-audience")

    async def close(self) -> None:
        for task in (self._reporter, *self._ending):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._reporter, *self._ending) if t is not None), return_exceptions=True)
        self._reporter = None

    async def ensure(self, channel: str, stream: str, upstreams: list[str]) -> None:
        """`channel` live on this node: already, or relayed from the first of `upstreams` that takes it.
        NotLive when none of them carries it any more; NodeFull when none can feed another relay."""
        if self._node.is_live(channel):
            return
        starting = self._starting.get(channel)
        if starting is None:
            starting = self._starting[channel] = asyncio.ensure_future(self._start(channel, stream, upstreams))
            starting.add_done_callback(lambda _: self._starting.pop(channel, None))
        await asyncio.shield(starting)

    async def _start(self, channel: str, stream: str, upstreams: list[str]) -> None:
        refusal: SfuError = NotLive(channel)
        for upstream in [u for u in upstreams if u != self._node_id][:MAX_UPSTREAMS]:
            try:
                await self._node.relay(channel, stream, upstream, functools.partial(self._ask, upstream, channel))
                return
            except (NotLive, NodeFull) as exc:
                refusal = exc
                log.info("node %s cannot feed a relay of %s: %s", upstream, channel, exc)
        raise refusal

    async def _ask(self, upstream: str, channel: str, offer: str) -> tuple[str, str]:
        request = {"op": "subscribe", "channel": channel, "offer": offer, "viewer": None,
                   "client": f"relay:{self._node_id}", "relay": True, "budget": RELAY_TIMEOUT - 1.0}
        answer = await self._request(upstream, request, RELAY_TIMEOUT)
        session, sdp = answer.get("session"), answer.get("answer")
        if not isinstance(session, str) or not isinstance(sdp, str):
            raise NodeFull(f"node {upstream} answered a relay with something this version cannot read")
        return session, sdp

    async def _request(self, upstream: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        try:
            answer = await self._bus.request(control_topic(upstream), request, timeout=timeout)
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

    # --- RelayEvents: the node's relay rooms report here ---

    async def relay_viewers(self, relay: Relay, stream: str, viewers: int) -> None:
        if relay.upstream_session:
            self._counts[relay] = viewers
            self._wake.set()

    async def relay_ended(self, relay: Relay, stream: str, reason: str) -> None:
        self._counts.pop(relay, None)
        if relay.upstream_session and len(self._ending) < 256:
            # Its peer connection closing tells the node upstream too; this says it at once.
            task = asyncio.ensure_future(self._end_upstream(relay))
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

    async def _end_upstream(self, relay: Relay) -> None:
        try:
            await self._request(relay.upstream, {"op": "end", "channel": relay.room, "session": relay.upstream_session},
                                REPORT_TIMEOUT)
        except SfuError:
            pass  # gone already

    async def _report_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            counts, self._counts = self._counts, {}
            for relay, viewers in counts.items():
                if relay.closed:
                    continue
                try:
                    await self._request(relay.upstream, {"op": "relayed", "channel": relay.room,
                                                         "session": relay.upstream_session, "viewers": viewers},
                                        REPORT_TIMEOUT)
                except SfuError as exc:
                    log.debug("could not tell node %s the audience of a relay: %s", relay.upstream, exc)
