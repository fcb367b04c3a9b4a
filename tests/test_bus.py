"""One contract, run against every bus: the in-memory one and the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bus import Bus, BusTimeout, Message, open_bus

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


async def test_request_without_responder_times_out(bus: Bus) -> None:
    with pytest.raises(BusTimeout):
        await bus.request("svc.nobody", {}, timeout=0.2)


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
