"""The node registry: nodes announce themselves with their load, silent ones drop out, admins see the cluster.

The registry contract runs on the in-memory store (with a clock the test moves) and on a real Redis; the
end-to-end test runs `tally serve` processes meeting on a private `redis-server`, publishes and watches on
one of them with real WebRTC peers, kills one with SIGKILL and restarts Redis under them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cluster import Announcer, LiveNode, NodeLoad, NodeRecord, NodeRegistry, StreamLoad
from cluster.memory import MemoryRegistry
from cluster.origins import MemoryOriginLocks, OriginLocks, RedisOriginLocks
from cluster.redis import RedisRegistry
from http_client import Client
from redis_server import RedisServer, redis_server
from server_process import serve
from support import FakeClock
from webrtc_peer import Peer

TTL = 1.5  # seconds; short so the real Redis expiry is seen quickly


def record(node_id: str, viewers: int = 0, **fields: Any) -> NodeRecord:
    return NodeRecord(id=node_id, http_url=f"http://{node_id}.internal:8080", media_addresses=("10.0.0.7",),
                      max_viewers=500, started_at=1_800_000_000.0, version="1.2.3",
                      load=NodeLoad(cpu=0.25, viewers=viewers, packets_out_per_s=1234.5, ladders=1),
                      streams=(StreamLoad(channel="alice", stream="s-1", viewers=viewers),), **fields)


class Store:
    """A registry and how to let time pass for it."""

    def __init__(self, registry: NodeRegistry, clock: FakeClock | None) -> None:
        self.registry = registry
        self._clock = clock

    async def wait(self, seconds: float) -> None:
        if self._clock is not None:
            self._clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "memory":
        clock = FakeClock()
        yield Store(MemoryRegistry(clock, ttl=TTL), clock)
        return
    with redis_server(tmp_path) as server:
        registry = RedisRegistry(server.url, ttl=TTL)
        yield Store(registry, None)
        await registry.close()


async def test_the_registry_lists_the_nodes_heard_from_and_forgets_silent_ones(store: Store) -> None:
    registry = store.registry
    assert await registry.live() == []
    await registry.announce(record("node-b", viewers=3))
    await registry.announce(record("node-a"))
    live = await registry.live()
    assert [n.record for n in live] == [record("node-a"), record("node-b", viewers=3)]  # by id, whole
    assert all(0 <= n.age < TTL for n in live)

    await registry.announce(record("node-b", viewers=4, draining=True))  # the newest announcement wins
    assert [(n.record.load.viewers, n.record.draining) for n in await registry.live()] == [(0, False), (4, True)]

    await registry.withdraw("node-a")  # a node that stops cleanly is gone at once
    assert [n.record.id for n in await registry.live()] == ["node-b"]

    await store.wait(0.5)
    await registry.announce(record("node-c"))
    await store.wait(TTL - 0.4)  # node-b silent for longer than the TTL; node-c for 0.4 s less
    assert [n.record.id for n in await registry.live()] == ["node-c"]
    await store.wait(0.5)
    assert await registry.live() == []


@pytest.fixture(params=["memory", "redis"])
async def origins(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[OriginLocks, Store]]:
    if request.param == "memory":
        clock = FakeClock()
        yield MemoryOriginLocks(clock, ttl=TTL), Store(MemoryRegistry(clock), clock)
        return
    with redis_server(tmp_path) as server:
        locks = RedisOriginLocks(server.url, ttl=TTL)
        yield locks, Store(MemoryRegistry(), None)
        await locks.close()


async def test_a_channel_has_one_origin_in_the_cluster(origins: tuple[OriginLocks, Store]) -> None:
    locks, store = origins
    assert await locks.owner("alice") is None
    assert await locks.claim("alice", "node-a") == "node-a"
    assert await locks.claim("alice", "node-a") == "node-a"  # again: still its own
    assert await locks.claim("alice", "node-b") == "node-a"  # refused: node-a holds it
    assert await locks.claim("alice", "node-b", steal_from="node-c") == "node-a"  # only from the holder
    await locks.release("alice", "node-b")  # not its to let go
    assert await locks.owner("alice") == "node-a"
    assert await locks.claim("alice", "node-b", steal_from="node-a") == "node-b"  # node-a was found dead
    await locks.release("alice", "node-b")
    assert await locks.owner("alice") is None

    await locks.claim("bob", "node-a")
    for _ in range(3):  # kept alive by refreshes, past its TTL
        await store.wait(TTL / 2)
        await locks.refresh("node-a", ["bob", "carol"])  # carol is carried but unclaimed: claimed now
    assert await locks.owner("bob") == "node-a" and await locks.owner("carol") == "node-a"
    await locks.refresh("node-b", ["bob"])  # another node's refresh does not take it
    assert await locks.owner("bob") == "node-a"
    await store.wait(TTL + 0.2)  # no refresh: the claim of a node that died runs out
    assert await locks.owner("bob") is None and await locks.claim("bob", "node-b") == "node-b"


async def test_records_from_a_newer_version_read_and_unreadable_ones_are_skipped(tmp_path: Path) -> None:
    import json

    import redis.asyncio as aioredis

    newer = json.loads(record("node-new").to_wire())
    newer["load"]["gpu"] = 0.5  # fields this version does not know
    newer["region"] = "eu-west"
    bad = {
        "garbage": b"\xff not json",
        "huge": json.dumps({**newer, "id": "huge", "max_viewers": 10**400}),
        "nan": json.dumps({**newer, "id": "nan", "load": {"cpu": float("nan")}}),
        "far-future": json.dumps({**newer, "id": "far-future", "started_at": 1e300}),
        "wrong-types": json.dumps({**newer, "id": "wrong-types", "load": {"viewers": "lots"}, "draining": "false"}),
        "letters": json.dumps({**newer, "id": "letters", "media_addresses": "10.0.0.7"}),
    }
    with redis_server(tmp_path) as server:
        client = aioredis.Redis.from_url(server.url)
        for node_id, value in {"node-new": json.dumps(newer), **bad}.items():
            await client.set(f"tally:node:{node_id}", value, px=3000)
            await client.sadd("tally:nodes", node_id)
        await client.aclose()
        registry = RedisRegistry(server.url)
        try:
            assert [n.record for n in await registry.live()] == [record("node-new")]
        finally:
            await registry.close()


async def test_the_announcer_beats_drains_and_withdraws() -> None:
    registry = MemoryRegistry()
    beats = 0

    def describe() -> NodeRecord:
        nonlocal beats
        beats += 1
        return record("node-a", viewers=beats)

    announcer = Announcer(registry, describe, interval=0.05)
    announcer.start()
    deadline = time.monotonic() + 5
    while beats < 3:
        assert time.monotonic() < deadline, "the announcer does not beat"
        await asyncio.sleep(0.02)
    [node] = await registry.live()
    assert node.record.load.viewers == beats and not node.record.draining
    await announcer.drain()
    assert (await registry.live())[0].record.draining
    seen = beats
    while beats < seen + 2:
        await asyncio.sleep(0.02)
    assert (await registry.live())[0].record.draining  # and it stays so on every beat after
    await announcer.close()
    assert await registry.live() == []


async def test_closing_ends_even_when_the_store_swallows_the_cancellation() -> None:
    """A registry client that eats the task's cancellation (the shutdown of a node once waited on its
    announcer until SIGKILL): close returns within a beat or two, and the node is withdrawn."""

    class Stubborn(MemoryRegistry):
        async def announce(self, record: NodeRecord) -> None:
            try:
                await asyncio.sleep(0.02)
            except asyncio.CancelledError:
                pass  # what a careless client does
            await super().announce(record)

    registry = Stubborn()
    announcer = Announcer(registry, lambda: record("node-a"), interval=0.05)
    announcer.start()
    await asyncio.sleep(0.2)
    began = time.monotonic()
    await asyncio.wait_for(announcer.close(), 5)
    assert time.monotonic() - began < 2
    assert await registry.live() == []


async def test_the_reaper_stops_even_when_the_store_turns_its_cancellation_into_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CI run U: a node's shutdown waited in its 'reaper' step until SIGKILL. A registry client that
    answers the cancellation with an error of its own looks like "the registry is down, look again":
    close must still end the loop, soon."""
    from signaling.streams import reaper as reaper_module

    asked = asyncio.Event()

    class Stubborn(MemoryRegistry):
        async def live(self) -> list[LiveNode]:
            asked.set()
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                raise ConnectionError("connection lost") from None  # what a careless client does
            return await super().live()

    monkeypatch.setattr(reaper_module, "INTERVAL", 0.01)
    reaper = reaper_module.StreamReaper(None, Stubborn(), "node-a")  # type: ignore[arg-type]  # (the registry comes first)
    reaper.start()
    await asyncio.wait_for(asked.wait(), 5)
    began = time.monotonic()
    await asyncio.wait_for(reaper.close(), 5)
    assert time.monotonic() - began < 1


async def test_a_node_that_cannot_describe_itself_keeps_beating(caplog: pytest.LogCaptureFixture) -> None:
    registry = MemoryRegistry()
    calls = 0

    def describe() -> NodeRecord:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("a bug")
        return record("node-a", viewers=calls)

    announcer = Announcer(registry, describe, interval=0.05)
    announcer.start()
    deadline = time.monotonic() + 5
    while calls < 4:
        assert time.monotonic() < deadline, "the announcer stopped"
        await asyncio.sleep(0.02)
    assert (await registry.live())[0].record.load.viewers >= 3
    assert "could not describe this node" in caplog.text
    await announcer.close()


async def test_the_announcer_rides_out_a_redis_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with redis_server(tmp_path) as server:
        registry, reader = RedisRegistry(server.url, ttl=TTL), RedisRegistry(server.url, ttl=TTL)
        announcer = Announcer(registry, lambda: record("node-a"), interval=0.1)
        announcer.start()
        try:
            await asyncio.sleep(0.3)
            assert [n.record.id for n in await reader.live()] == ["node-a"]
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="cluster.announcer"):
                server.stop()
                await asyncio.sleep(1.0)  # ten beats against a Redis that is not there
                await asyncio.to_thread(server.start)  # empty: it kept nothing
                deadline = time.monotonic() + 5
                while not await _ids(reader):
                    assert time.monotonic() < deadline, "the node did not come back into the registry"
                    await asyncio.sleep(0.05)
            announcing = [r.getMessage() for r in caplog.records if r.name == "cluster.announcer"]
            assert len([m for m in announcing if "could not announce node node-a" in m]) == 1, announcing  # once
            assert any("announced to the registry again" in m for m in announcing), announcing
        finally:
            await announcer.close()
            await registry.close()
            await reader.close()


async def _ids(registry: NodeRegistry) -> list[str]:
    try:
        return [n.record.id for n in await registry.live()]
    except Exception:
        return []


async def cluster_ids(client: Client, token: str) -> list[str]:
    status, body = await client.call("GET", "/api/cluster", token=token)
    assert status == 200, body
    return [node["id"] for node in body["nodes"]]


async def wait_for(condition: Any, timeout: float, what: str) -> float:
    """Poll the async `condition` until true; the seconds it took."""
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < timeout, f"{what} within {timeout} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_nodes_on_one_redis_see_each_other_and_a_killed_node_drops_out(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis:
        common = {"BUS_URL": redis.url, "LOG_LEVEL": "INFO"}
        (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
        with serve(tmp_path / "a", NODE_ID="node-a", **common) as a, \
                serve(tmp_path / "b", NODE_ID="node-b", **common) as b:
            async with aiohttp.ClientSession() as http:
                on_a, on_b = Client(http, a.url), Client(http, b.url)
                admin = await on_a.admin("boss")  # each process has its own database: its own first account
                with serve(tmp_path / "c", NODE_ID="node-c", **common):
                    await _cluster_of_three(on_a, admin, a.url, b.url)
                    status, problem = await on_a.call("GET", "/api/cluster")
                    assert status == 401 and problem["status"] == 401
                    await on_b.admin("bboss")  # node-b's first account; the next is a broadcaster
                    key = await on_b.broadcaster("someone")
                    status, login = await on_b.call("POST", "/api/auth/login",
                                                     {"username": "someone", "password": "correct horse"})
                    assert (await on_b.call("GET", "/api/cluster", token=login["access_token"]))[0] == 403  # not an admin there

                    await _load_shows(on_a, on_b, admin, key)

                    b.kill()
                    # Silent for the 3 s TTL (less the time since its last beat), it drops out.
                    await wait_for(lambda: _without(on_a, admin, "node-b"), 8, "a killed node drops out")
                # node-c has stopped on SIGTERM (and exited 0): it took itself out on the way
                assert await cluster_ids(on_a, admin) == ["node-a"]

                await _redis_restart(on_a, admin, redis)
        log = (tmp_path / "a" / "server.log").read_text()
    assert log.count("could not announce node node-a") <= 1, log[-3000:]
    assert "Traceback" not in log, log[-5000:]


async def _cluster_of_three(on_a: Client, admin: str, a_url: str, b_url: str) -> None:
    await wait_for(lambda: _has(on_a, admin, ["node-a", "node-b", "node-c"]), 5, "three nodes listed")
    _, body = await on_a.call("GET", "/api/cluster", token=admin)
    nodes = {n["id"]: n for n in body["nodes"]}
    assert nodes["node-a"]["http_url"] == a_url and nodes["node-b"]["http_url"] == b_url
    assert nodes["node-b"]["media_addresses"] == ["127.0.0.1"]
    assert all(0 <= n["last_seen_ms"] <= 3000 and not n["draining"] for n in nodes.values())
    assert all(n["load"]["viewers"] == 0 and n["streams"] == [] for n in nodes.values())


async def _load_shows(on_a: Client, on_b: Client, admin: str, key: str) -> None:
    """A stream and its viewer on node-b show in node-a's view of the cluster within two beats."""
    publisher, viewer = Peer.publisher("h264"), Peer.viewer()
    try:
        await on_b.connect(publisher, "/whip/someone", key)
        await on_b.connect(viewer, "/whep/someone")
        await viewer.wait_frames(10)

        async def b_carries_the_stream() -> bool:
            _, body = await on_a.call("GET", "/api/cluster", token=admin)
            node_b = next(n for n in body["nodes"] if n["id"] == "node-b")
            return bool(node_b["streams"]) and node_b["load"]["viewers"] == 1 \
                and node_b["load"]["packets_out_per_s"] > 10 and node_b["load"]["publishers"] == 1

        await wait_for(b_carries_the_stream, 4, "node-b's stream and viewer in the registry")
        _, body = await on_a.call("GET", "/api/cluster", token=admin)
        node_b = next(n for n in body["nodes"] if n["id"] == "node-b")
        assert [(s["channel"], s["viewers"]) for s in node_b["streams"]] == [("someone", 1)]
        assert 0 < node_b["load"]["cpu"] < 2 and 0 < node_b["load"]["loop"] <= node_b["load"]["cpu"] + 0.05
        assert node_b["load"]["cores"] >= 1
    finally:
        await viewer.close()
        await publisher.close()


async def _redis_restart(on_a: Client, admin: str, redis: RedisServer) -> None:
    redis.stop()
    status, problem = await on_a.call("GET", "/api/cluster", token=admin)
    assert status == 503 and problem["status"] == 503, problem
    await asyncio.sleep(1.5)
    await asyncio.to_thread(redis.start)  # an empty Redis: the cluster forms again from the nodes' next beats
    await wait_for(lambda: _has(on_a, admin, ["node-a"]), 5, "the cluster formed again after Redis restarted")


async def _has(client: Client, token: str, ids: list[str]) -> bool:
    status, body = await client.call("GET", "/api/cluster", token=token)
    return status == 200 and [n["id"] for n in body["nodes"]] == ids


async def _without(client: Client, token: str, node_id: str) -> bool:
    status, body = await client.call("GET", "/api/cluster", token=token)
    return status == 200 and node_id not in [n["id"] for n in body["nodes"]]


async def test_a_node_that_lost_its_channel_to_another_ends_its_stream_there() -> None:
    from signaling.cluster.origin_keeper import OriginKeeper

    locks = MemoryOriginLocks()
    assert await locks.claim("alice", "node-b") == "node-b"  # node-b took the channel meanwhile
    ended: list[str] = []
    keeper = OriginKeeper(locks, "node-a", lambda: {"alice", "bob"}, ended.append)
    keeper.start()
    try:
        deadline = time.monotonic() + 5
        while not ended:
            assert time.monotonic() < deadline, "node-a kept a channel another node holds"
            await asyncio.sleep(0.05)
    finally:
        await keeper.close()
    assert ended[0] == "alice" and "bob" not in ended
    assert await locks.owner("bob") == "node-a" and await locks.owner("alice") == "node-b"


def test_a_burst_of_new_streams_is_spread_over_equally_loaded_nodes() -> None:
    from signaling.media.cluster import RecentPlacements, _least_loaded

    clock = FakeClock()

    def node(node_id: str, loop: float, publishers: int = 0, draining: bool = False) -> NodeRecord:
        return NodeRecord(id=node_id, http_url="http://x", max_viewers=500, draining=draining,
                          load=NodeLoad(loop=loop, publishers=publishers))

    placed = RecentPlacements(clock)
    announced = clock()  # when the records below were announced
    clock.advance(0.2)

    def unannounced(node_id: str) -> int:
        return placed.since(node_id, announced)

    nodes = [node("node-a", 0.03), node("node-b", 0.07, publishers=1), node("node-c", 0.01, draining=True)]
    chosen = []
    for _ in range(6):  # six offers between two beats: the records do not change
        target = _least_loaded(nodes, unannounced)
        placed.add(target.id)
        chosen.append(target.id)
    # Loop noise inside one tenth does not decide; streams (with those just placed) do; draining takes none.
    # node-b already carries a stream: the six even the two out (4 and 3 streams), by name on ties.
    assert chosen == ["node-a", "node-a", "node-b", "node-a", "node-b", "node-a"]
    assert "node-c" not in chosen
    announced = clock() + 0.1  # the next beats carry them in the records: counted there, not twice
    clock.advance(0.2)
    assert unannounced("node-a") == 0 and unannounced("node-b") == 0
    clock.advance(RecentPlacements.SPAN)
    assert placed.since("node-a", float("-inf")) == 0  # forgotten after a while, whatever the records say
    busy = [node("node-a", 0.55), node("node-b", 0.12, publishers=3)]
    assert _least_loaded(busy, unannounced).id == "node-b"  # a busier loop outweighs fewer streams


async def test_a_live_channel_left_without_a_stream_goes_offline(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream that ended because another node claimed its channel leaves the channel live for the
    stream that node is starting; if that never comes, the reaper takes the channel offline and says so."""
    from sqlalchemy import update

    from signaling.db.models import Channel
    from signaling.streams import reaper as reaper_module

    name = (await api.register())["username"]
    async with api.services.db.session() as session:
        await session.execute(update(Channel).where(Channel.name == name).values(is_live=True))
        await session.commit()
    reaper = reaper_module.StreamReaper(api.services.streams, MemoryRegistry(), "node-a")
    async with await api.services.bus.subscribe("stream.ended") as ended:
        assert await reaper.reap() == 0  # seen once: a takeover may still be negotiating
        monkeypatch.setattr(reaper_module, "ORPHAN_GRACE", 0.0)
        assert await reaper.reap() == 1
        message = await asyncio.wait_for(ended.get(), 5)
    assert message.payload["channel"] == name
    status, body, _ = await api.call("GET", f"/api/channels/{name}")
    assert status == 200 and body["is_live"] is False
    assert await reaper.reap() == 0  # once
