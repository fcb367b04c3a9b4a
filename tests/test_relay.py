"""Relays: a stream carried from its origin node into a room of another node.

Two SFU nodes in one process (each with its own sockets, as two processes would have), real aiortc
peers for the publisher and the viewer, and between the nodes a link that delays datagrams and, while
the repair of losses is measured, drops and reorders 2 % of them each way. What crosses the hop is
what crosses it in a cluster; only the request that carries the relay's offer upstream is a direct
call here instead of a message on the bus (the cluster tests cover that path).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from sfu import aiortc_internals as internals
from sfu import node as node_module
from sfu.errors import AlreadyPublishing, NodeFull, NotLive
from sfu.node import NodeSettings, SfuNode
from sfu.relay import Relay
from sfu.subscriber import Subscriber
from udp_impairment import Impairment, LossyRelay
from webrtc_peer import Peer

ROOM = "caster"


@dataclass
class Counted:
    """The origin's stream events and the relay's reports, as the node tells them."""

    viewers: list[int] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    relays_ended: list[str] = field(default_factory=list)
    upstreams: dict[str, SfuNode] = field(default_factory=dict)  # by the name relays know them by

    async def stream_started(self, room: str, stream: str, user: str | None, formats: list[object]) -> None:
        return None

    async def stream_ended(self, room: str, stream: str, reason: str, peak_viewers: int) -> None:
        self.ended.append(reason)

    async def viewers_changed(self, room: str, stream: str, viewers: int) -> None:
        self.viewers.append(viewers)

    async def relay_viewers(self, relay: Relay, stream: str, viewers: int) -> None:
        upstream = self.upstreams.get(relay.upstream)
        if upstream is not None and relay.upstream_session in upstream.sessions:
            upstream.set_relayed(relay.upstream_session, viewers)  # what the bus carries in a cluster

    async def relay_ended(self, relay: Relay, stream: str, reason: str) -> None:
        self.relays_ended.append(reason)


def _settings(**overrides: object) -> NodeSettings:
    values: dict[str, object] = {"ice": internals.IcePlan(("127.0.0.1",)), "viewers_interval": 0.2}
    values.update(overrides)
    return NodeSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[SfuNode, SfuNode, Counted]]:
    counted = Counted()
    origin = SfuNode(_settings(), counted)
    edge = SfuNode(_settings(relay_linger=1.0, publisher_timeout=1.0), counted)
    edge.relay_events = counted
    counted.upstreams["origin"] = origin
    await origin.start()
    await edge.start()
    try:
        yield origin, edge, counted
    finally:
        await edge.close()
        await origin.close()


async def _publish(node: SfuNode, peer: Peer) -> None:
    _, answer = await node.publish(ROOM, await peer.offer(), "caster")
    await peer.answer(answer)


async def _watch(node: SfuNode, peer: Peer) -> Subscriber:
    session, answer = await node.subscribe(ROOM, await peer.offer(), None)
    await peer.answer(answer)
    return session


async def _until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_relayed_stream_plays_in_sync_and_repairs_loss_across_the_hop(
        nodes: tuple[SfuNode, SfuNode, Counted]) -> None:
    origin, edge, counted = nodes
    link = LossyRelay(Impairment(loss=0.0, reorder=0.0), seed=7)  # clean until the loss is measured
    await link.start()
    publisher, viewer = Peer.publisher("h264", audio=True), Peer.viewer()

    async def ask(offer: str) -> tuple[str, str, str, tuple[str, ...]]:
        session, answer = await origin.subscribe(ROOM, link.offer(offer), None, "relay:edge", relay=True)
        return session.id, link.answer(answer), origin.rooms[ROOM].stream, origin.rooms[ROOM].relay_path

    try:
        await _publish(origin, publisher)
        await _until(lambda: origin.rooms[ROOM].feeds["video"].packets_in > 0)
        stream = origin.rooms[ROOM].stream
        relay = await edge.relay(ROOM, "origin", ask)
        assert edge.rooms[ROOM].relay_from == "origin" and edge.rooms[ROOM].stream == stream
        assert not edge.originates(ROOM) and edge.is_live(ROOM) and edge.relays_in() == 1
        with pytest.raises(AlreadyPublishing):  # the origin never relays its own stream
            await origin.relay(ROOM, "edge", ask)

        await _watch(edge, viewer)
        await viewer.wait_frames(30, timeout=20)
        # The relay is no viewer on the origin, but the viewer behind it counts there.
        assert origin.viewers() == 0 and origin.relays_out() == 1 and edge.viewers() == 1
        await _until(lambda: counted.viewers and counted.viewers[-1] == 1)
        assert origin.rooms[ROOM].audience == 1

        # Lip sync across the hop: the edge's reports pin each of its RTP clocks to the same NTP time
        # as the publisher's reports on the origin (through the origin's timestamp rewriting).
        await _until(lambda: all(f.mapping is not None for f in edge.rooms[ROOM].feeds.values()))
        hop = next(s for s in origin.rooms[ROOM].subscribers.values() if s.relay)
        now = time.monotonic()
        for down in hop.downtracks:
            source, relayed = origin.rooms[ROOM].feeds[down.feed.kind].mapping, edge.rooms[ROOM].feeds[down.feed.kind].mapping
            assert source is not None and relayed is not None
            ntp, source_ts = source.at(now)
            relayed_ntp, relayed_ts = relayed.at(now)
            expected_ts = down._rewriter.out_timestamp(source_ts)
            drift = ((relayed_ts - expected_ts + 2**31) % 2**32 - 2**31) / source.clock_rate - (relayed_ntp - ntp)
            assert abs(drift) < 0.03, (down.feed.kind, drift)

        # Keyframe requests on the edge reach the origin's feed (asked again while the edge coalesces
        # them: a keyframe arriving meanwhile rightly answers a request it held back).
        asked = origin.rooms[ROOM].feeds["video"].keyframes.requested

        def asked_upstream() -> bool:
            edge.request_keyframe(ROOM)
            return origin.rooms[ROOM].feeds["video"].keyframes.requested > asked

        await _until(asked_upstream)

        # Loss on the hop is asked for again and repaired by the origin. (Counted on the edge, not in a
        # test viewer's frames: like libwebrtc, the SFU stops asking for packets older than a keyframe
        # that has arrived, which browsers skip but aiortc's jitter buffer waits on for 512 packets.)
        video = edge.rooms[ROOM].feeds["video"]
        repaired, lost = video.loss.repaired, video.loss.lost
        link.impairment.loss, link.impairment.reorder = 0.02, 0.02
        await asyncio.sleep(8)
        link.impairment.loss = link.impairment.reorder = 0.0
        repaired, lost = video.loss.repaired - repaired, video.loss.lost - lost
        print(f"over a lossy hop: {repaired} packets repaired, {lost} not")
        assert link.impairment.counts["dropped"] > 10
        assert sum(d.retransmitted for d in hop.downtracks) > 0
        assert repaired >= 3 and repaired >= 3 * lost, (repaired, lost)
        # The viewer leaves; the relay lingers, then ends and lets go of the origin.
        await viewer.close()
        await _until(lambda: edge.viewers() == 0, timeout=20)
        await _until(lambda: ROOM not in edge.rooms, timeout=10)
        await _until(lambda: counted.relays_ended, timeout=5)  # the node tells it a moment later
        assert "no viewer" in counted.relays_ended[-1]
        await _until(lambda: origin.relays_out() == 0, timeout=15)
        assert origin.is_live(ROOM) and not counted.ended  # the stream itself goes on
        assert relay.closed
    finally:
        await publisher.close()
        await viewer.close()
        link.close()


async def test_relays_chain_follow_a_new_origin_and_have_a_cap(
    nodes: tuple[SfuNode, SfuNode, Counted], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """origin -> edge -> far: the far node's viewer watches through two hops. No node feeds a relay to
    a node its stream comes through (a loop of any length), nor one hop past the cap. Then the stream
    goes live on another node (its origin moved): the edge's relay follows it there, and the viewer
    behind two hops keeps watching without a new session. When the stream ends, the relays end after
    the media timeout (in a cluster, at once: the end is told on the bus)."""
    origin, edge, counted = nodes
    far = SfuNode(_settings(publisher_timeout=1.0))
    moved, third = SfuNode(_settings()), SfuNode(_settings())
    await far.start()
    await moved.start()
    await third.start()
    publisher, second, viewer = Peer.publisher("vp8"), Peer.publisher("vp8"), Peer.viewer()

    def asker(upstream: SfuNode, client: str) -> object:
        async def ask(offer: str) -> tuple[str, str, str, tuple[str, ...]]:
            session, answer = await upstream.subscribe(ROOM, offer, None, client, relay=True)
            return session.id, answer, upstream.rooms[ROOM].stream, upstream.rooms[ROOM].relay_path
        return ask

    try:
        await _publish(origin, publisher)
        await _until(lambda: origin.rooms[ROOM].feeds["video"].packets_in > 0)
        await edge.relay(ROOM, "origin", asker(origin, "relay:edge"))  # type: ignore[arg-type]
        await far.relay(ROOM, "edge", asker(edge, "relay:far"))  # type: ignore[arg-type]
        session = await _watch(far, viewer)
        await viewer.wait_frames(10, timeout=20)
        assert edge.relays_out() == 1 and origin.relays_out() == 1 and far.rooms[ROOM].relay_from == "edge"
        assert far.rooms[ROOM].relay_path == ("edge", "origin") and origin.rooms[ROOM].relay_path == ()

        # A loop of three: `third` relays from `far`; `edge`, upstream of both, must not relay from it.
        # (Refusing the previous node alone let this through: third's upstream is far, not edge.)
        await third.relay(ROOM, "far", asker(far, "relay:third"))  # type: ignore[arg-type]
        assert third.rooms[ROOM].relay_path == ("far", "edge", "origin")
        with pytest.raises(NotLive, match="through that very node"):
            await third.subscribe(ROOM, await Peer.viewer().offer(), None, "relay:edge", relay=True)
        with pytest.raises(NotLive, match="through that very node"):
            await far.subscribe(ROOM, await Peer.viewer().offer(), None, "relay:origin", relay=True)
        monkeypatch.setattr(node_module, "MAX_HOPS", 3)  # third is the third hop: it feeds no fourth
        with pytest.raises(NodeFull, match="through 3 relays"):
            await third.subscribe(ROOM, await Peer.viewer().offer(), None, "relay:elsewhere", relay=True)
        monkeypatch.undo()
        await third.close()

        await _publish(moved, second)
        await _until(lambda: moved.rooms[ROOM].feeds["video"].packets_in > 0)
        await publisher.close()  # the first origin's publisher is gone
        await edge.relay(ROOM, "moved", asker(moved, "relay:edge"))  # type: ignore[arg-type]
        assert edge.rooms[ROOM].relay_from == "moved" and edge.rooms[ROOM].stream == moved.rooms[ROOM].stream
        frames = viewer.frames
        await viewer.wait_frames(frames + 20, timeout=10)  # still the same session, two hops from the new origin
        assert far.sessions.get(session.id) is session
        await _until(lambda: origin.relays_out() == 0, timeout=15)  # the first origin let go of the old relay

        moved.end_room(ROOM, "the broadcaster ended the stream")
        await _until(lambda: ROOM not in edge.rooms and ROOM not in far.rooms, timeout=15)
        assert far.viewers() == 0
    finally:
        for peer in (publisher, second, viewer):
            await peer.close()
        await far.close()
        await moved.close()
        await third.close()

    capped = SfuNode(_settings(max_relays=0))
    await capped.start()
    other = Peer.publisher("vp8")
    try:
        await _publish(capped, other)
        with pytest.raises(NodeFull, match="maximum of 0 relays"):
            await capped.subscribe(ROOM, await Peer.viewer().offer(), None, "relay:edge", relay=True)
    finally:
        await other.close()
        await capped.close()


async def test_a_relay_whose_upstream_node_stops_follows_the_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    """origin -> mid -> far, three nodes meeting on one bus (in memory here; Redis in a cluster) with
    their control endpoints and relays as `tally node` has them. Each relay knows the path to the
    origin, kept fresh by its audience reports. The middle node stops abruptly: the far node's relay
    loses its connection, asks the cluster's claims where the stream is published, re-attaches there,
    and its viewer keeps its session and its pictures."""
    from bus import open_bus
    from cluster import open_origin_locks
    from signaling.media.claiming import ClaimingPlane
    from signaling.media.control import NodeControl
    from signaling.media import relays as relays_module
    from signaling.media.relays import Relays

    monkeypatch.setattr(relays_module, "REPORT_EVERY", 0.2)  # (no origin keeper here: the claim lasts ORIGIN_TTL)
    bus, locks = open_bus("memory://"), open_origin_locks("memory://")
    stack: list[tuple[SfuNode, NodeControl, Relays]] = []
    for name in ("origin", "mid", "far"):
        node = SfuNode(_settings(publisher_timeout=5.0))
        relays = Relays(node, bus, name, locks)
        control = NodeControl(ClaimingPlane(node, locks, name), bus, name, relays)
        await node.start()
        await control.start()
        await relays.start()
        stack.append((node, control, relays))
    (origin, _, _), (mid, mid_control, mid_relays), (far, _, far_relays) = stack
    publisher, viewer = Peer.publisher("vp8"), Peer.viewer()
    try:
        plane = ClaimingPlane(origin, locks, "origin")
        ticket = await plane.publish(ROOM, await publisher.offer(), "caster", "")
        await publisher.answer(ticket.answer)
        await _until(lambda: origin.rooms[ROOM].feeds["video"].packets_in > 0)
        deadline = asyncio.get_running_loop().time() + 6
        await mid_relays.ensure(ROOM, ["origin"], deadline, origin="origin")
        await far_relays.ensure(ROOM, ["mid"], deadline, origin="origin")
        session = await _watch(far, viewer)
        await viewer.wait_frames(10, timeout=20)
        assert far.rooms[ROOM].relay_from == "mid" and far.rooms[ROOM].relay_path == ("mid", "origin")
        mid.rooms[ROOM].relay_path = ("elsewhere", "origin")  # as if mid had re-attached farther up
        await _until(lambda: far.rooms[ROOM].relay_path == ("mid", "elsewhere", "origin"), timeout=3)
        mid.rooms[ROOM].relay_path = ("origin",)

        await mid_relays.close()  # the middle node goes away at once
        await mid_control.close()
        await mid.close()
        stopped = time.monotonic()
        await _until(lambda: ROOM in far.rooms and far.rooms[ROOM].relay_from == "origin", timeout=5)
        frames = viewer.frames
        await viewer.wait_frames(frames + 10, timeout=5)
        print(f"far viewer decoding from the origin {time.monotonic() - stopped:.2f} s after its upstream stopped")
        assert far.sessions.get(session.id) is session
    finally:
        await publisher.close()
        await viewer.close()
        for node, control, relays in reversed(stack):
            await relays.close()
            await control.close()
            await node.close()
        await bus.close()
