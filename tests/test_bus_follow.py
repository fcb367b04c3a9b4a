"""`bus.follow` keeps following topics through a Redis restart (a private redis-server, stopped and
started again on its port), and a handler that raises costs only its own message."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bus import Message, open_bus
from bus.follow import follow
from redis_server import redis_server


async def test_following_survives_a_redis_restart_and_a_failing_handler(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with redis_server(tmp_path) as redis:
        listener, speaker = open_bus(redis.url), open_bus(redis.url)
        seen: list[str] = []

        def handle(message: Message) -> None:
            if message.payload.get("boom"):
                raise ValueError("a bad message")
            seen.append(str(message.payload["n"]))

        task = asyncio.create_task(follow(listener, ("events",), handle, "the test"))
        try:
            async def said(n: str) -> None:
                deadline = asyncio.get_running_loop().time() + 15
                while n not in seen:  # published again until heard: a subscription may be coming back
                    assert asyncio.get_running_loop().time() < deadline, f"{n} was never heard: {seen}"
                    try:
                        await speaker.publish(Message("events", {"n": n}))
                    except Exception:  # noqa: BLE001 - the speaker's own connection is coming back too
                        pass
                    await asyncio.sleep(0.2)

            await said("1")
            await speaker.publish(Message("events", {"boom": True}))
            await said("2")  # still following after a handler raised
            redis.stop()
            await asyncio.sleep(1.0)
            redis.start()
            await said("3")  # subscribed again by itself
            assert "the test lost the bus" in caplog.text  # it was the restart, not the old subscription
            assert "could not handle a events message" in caplog.text
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await listener.close()
            await speaker.close()
