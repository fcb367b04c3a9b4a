"""One contract, run against every bus: the in-memory one and the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bus import Bus, BusError, BusTimeout, Message, NoResponder, open_bus

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["memory://", REDIS_URL])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    instance = open_bus(request.param)
    await instance.ping()
    yield instance
    await instance.close()


async def test_publish_reaches_every_subscriber_in_order(bus: Bus) -> None:
    async with await bus.subscribe("t.a") as one, await bus.subscribe("t.a", "t.b") as two:
        for n in range(20):
            await bus.publish(Message("t.a", {"n": n, "text": "héllo ✨"}))
        await bus.publish(Message("t.b", {"n": 99}))
        got_one = [(await one.get()).payload["n"] for _ in range(20)]
        got_two = [(await two.get()).payload["n"] for _ in range(21)]
    assert got_one == list(range(20))
    assert got_two == [*range(20), 99]


async def test_unsubscribed_topics_are_not_delivered(bus: Bus) -> None:
    async with await bus.subscribe("t.mine") as mine:
        await bus.publish(Message("t.other", {"x": 1}))
        await bus.publish(Message("t.mine", {"x": 2}))
        assert (await mine.get()).payload == {"x": 2}


async def test_request_reply(bus: Bus) -> None:
    async def double(message: Message) -> dict[str, int]:
        return {"doubled": message.payload["n"] * 2}

    await bus.serve("svc.double", double)
    await asyncio.sleep(0.05)  # the responder's subscription must be in place (Redis: a round trip)
    assert await bus.request("svc.double", {"n": 21}) == {"doubled": 42}
    answers = await asyncio.gather(*(bus.request("svc.double", {"n": n}) for n in range(10)))
    assert [a["doubled"] for a in answers] == [n * 2 for n in range(10)]


async def test_a_failing_handler_answers_with_an_error_and_keeps_serving(bus: Bus) -> None:
    async def fragile(message: Message) -> dict[str, int]:
        if message.payload.get("boom"):
            raise RuntimeError("boom")
        return {"ok": 1}

    await bus.serve("svc.fragile", fragile)
    await asyncio.sleep(0.05)
    assert await bus.request("svc.fragile", {"boom": True}) == {"error": "RuntimeError"}
    assert await bus.request("svc.fragile", {}) == {"ok": 1}


async def test_a_request_nobody_serves_fails_at_once_and_an_unanswered_one_times_out(bus: Bus) -> None:
    started = asyncio.get_running_loop().time()
    with pytest.raises(NoResponder):
        await bus.request("svc.nobody", {}, timeout=5)
    assert asyncio.get_running_loop().time() - started < 2  # not the whole timeout

    async with await bus.subscribe("svc.mute"):  # subscribed, never answers
        with pytest.raises(BusTimeout):
            await bus.request("svc.mute", {}, timeout=0.2)


async def test_what_is_not_a_bus_message_is_skipped_and_serving_goes_on(tmp_path: Path) -> None:
    import redis.asyncio as aioredis

    from redis_server import redis_server

    async def echo(message: Message) -> dict[str, Any]:
        return {"echo": message.payload["x"]}

    with redis_server(tmp_path) as server:
        bus = open_bus(server.url)
        try:
            await bus.serve("svc.echo", echo)
            await asyncio.sleep(0.05)
            raw = aioredis.Redis.from_url(server.url)
            for junk in (b"x", b"\xff", b'{"t": "a", "p": []}', b'{"t": "a", "p": {}, "r": 5}', b"[1]"):
                await raw.publish("svc.echo", junk)
            await raw.aclose()
            assert await bus.request("svc.echo", {"x": 3}) == {"echo": 3}
        finally:
            await bus.close()


async def test_two_bus_instances_on_one_redis_share_messages() -> None:
    first, second = open_bus(REDIS_URL), open_bus(REDIS_URL)
    try:
        async with await second.subscribe("t.shared") as subscription:
            await first.publish(Message("t.shared", {"from": "first"}))
            assert (await asyncio.wait_for(subscription.get(), 5)).payload == {"from": "first"}
    finally:
        await first.close()
        await second.close()


def test_messages_are_validated_and_round_trip() -> None:
    message = Message("a.b", {"k": [1, "ü"]}, reply_to="r")
    assert Message.decode(message.encode()) == message
    with pytest.raises(ValueError):
        Message("", {})
    with pytest.raises(TypeError):
        Message("a", [1])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        open_bus("kafka://x")


async def test_requests_are_answered_side_by_side(bus: Bus) -> None:
    """Five requests whose handler waits until all five have arrived: answered only if served at once."""
    arrived = 0
    everyone = asyncio.Event()

    async def gather_round(message: Message) -> dict[str, int]:
        nonlocal arrived
        arrived += 1
        if arrived == 5:
            everyone.set()
        await everyone.wait()
        return {"n": message.payload["n"]}

    await bus.serve("svc.together", gather_round)
    await asyncio.sleep(0.05)
    answers = await asyncio.gather(*(bus.request("svc.together", {"n": n}, timeout=5) for n in range(5)))
    assert sorted(a["n"] for a in answers) == list(range(5))


async def test_a_responder_serves_again_after_redis_restarts(tmp_path: Path) -> None:
    from redis_server import redis_server

    async def echo(message: Message) -> dict[str, Any]:
        return {"echo": message.payload["x"]}

    with redis_server(tmp_path) as server:
        bus = open_bus(server.url)
        asker = open_bus(server.url)
        try:
            await bus.serve("svc.echo", echo)
            await asyncio.sleep(0.05)
            assert await asker.request("svc.echo", {"x": 1}) == {"echo": 1}
            server.stop()
            await asyncio.sleep(0.5)
            await asyncio.to_thread(server.start)
            deadline = asyncio.get_running_loop().time() + 20
            while True:
                try:
                    assert await asker.request("svc.echo", {"x": 2}, timeout=0.5) == {"echo": 2}
                    break
                except BusError:
                    assert asyncio.get_running_loop().time() < deadline, "the responder never came back"
        finally:
            await asker.close()
            await bus.close()
