"""Background tasks stop when their owner closes, however their store answers a cancellation.

CI runs N and U each hung a node's shutdown until SIGKILL: a store client that answers the cancellation
with an error of its own, in a loop that takes any error for "the store is down, try again", kept the
loop going, and "cancel, then wait for the task" waited for ever. Every owner of such a loop now stops
it with `lifecycle.tasks.stop` (bounded) and checks a closed flag each turn (so the loop ends)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import datetime

import pytest

from cluster.origins import MemoryOriginLocks
from lifecycle.tasks import Periodic, stop
from signaling.cluster import origin_keeper as keeper_module
from signaling.notifications.outbox import Job, Outbox
from signaling.notifications.worker import Worker


async def stubborn_call(asked: asyncio.Event) -> None:
    """What a careless store client does: a cancellation while it waits comes out as an error."""
    asked.set()
    try:
        await asyncio.sleep(1)
    except asyncio.CancelledError:
        raise ConnectionError("connection lost") from None


async def closes_soon(close: object) -> float:
    began = time.monotonic()
    await asyncio.wait_for(close, 5)  # type: ignore[arg-type]
    return time.monotonic() - began


async def test_stop_waits_a_bounded_time_for_a_task_that_will_not_end(caplog: pytest.LogCaptureFixture) -> None:
    deaf_until = asyncio.Event()

    async def deaf() -> None:
        while not deaf_until.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(deaf(), name="deaf-loop")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, "lifecycle.tasks"):
        began = time.monotonic()
        ended = await stop([task, None], "the test's loop", within=0.3)
    assert not ended
    assert 0.25 < time.monotonic() - began < 1.5
    assert "the test's loop: 1 task(s) did not stop within 0.3 s" in caplog.text and "deaf-loop" in caplog.text
    deaf_until.set()  # (let it end, so that the test's loop can close)
    task.cancel()
    await asyncio.wait({task}, timeout=1)


async def test_stop_takes_the_errors_of_tasks_that_ended_and_is_quick_with_nothing_running() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fails())
    await asyncio.sleep(0)
    sleeping = asyncio.create_task(asyncio.sleep(10))
    seen: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: seen.append(context))
    assert await stop([failed, sleeping], "two tasks")
    assert sleeping.cancelled() and failed.done()
    assert await stop([], "nothing") and await stop([None], "nothing")
    del failed
    import gc
    gc.collect()
    assert not [c for c in seen if "never retrieved" in str(c.get("message"))]


async def test_a_periodic_step_that_turns_its_cancellation_into_an_error_ends_at_close() -> None:
    asked = asyncio.Event()
    periodic = Periodic("stubborn", 0.01, lambda: stubborn_call(asked))
    periodic.start()
    await asyncio.wait_for(asked.wait(), 5)
    task = periodic._task
    assert await closes_soon(periodic.close()) < 1
    assert task is not None and task.done()  # ended by itself, not left behind
    periodic.start()  # a closed one does not start again
    assert periodic._task is None


async def test_the_origin_keeper_ends_when_its_store_turns_the_cancellation_into_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = asyncio.Event()

    class Stubborn(MemoryOriginLocks):
        async def refresh(self, node_id: str, channels: Iterable[str]) -> list[str]:
            await stubborn_call(asked)
            return []

    monkeypatch.setattr(keeper_module, "REFRESH_INTERVAL", 0.01)
    keeper = keeper_module.OriginKeeper(Stubborn(), "node-a", lambda: {"alice"}, lambda _: None)
    keeper.start()
    await asyncio.wait_for(asked.wait(), 5)
    task = keeper._task
    assert await closes_soon(keeper.close()) < 1
    assert task is not None and task.done()


async def test_the_notification_worker_ends_when_its_database_turns_the_cancellation_into_an_error() -> None:
    asked = asyncio.Event()

    class Stubborn(Outbox):
        def __init__(self) -> None:  # no database: only `claim` is asked
            pass

        async def claim(self, worker: str, now: datetime, room: dict[str, int], lease: float) -> list[Job]:
            await stubborn_call(asked)
            return []

        async def renew(self, worker: str, ids: list[int], now: datetime, lease: float) -> None:
            await stubborn_call(asked)

    async def handler(job: Job) -> None:
        return None

    worker = Worker(Stubborn(), {"email": handler}, poll=0.01)
    worker.start()
    await asyncio.wait_for(asked.wait(), 5)
    task = worker._task
    assert await closes_soon(worker.close()) < 1
    assert task is not None and task.done()


async def test_following_topics_ends_when_the_bus_turns_the_cancellation_into_an_error() -> None:
    """bus.follow subscribes again after any error (a Redis restart); an error that is a cancellation in
    disguise must end it all the same (the chat hub and the relays follow topics for the process's life)."""
    from bus import BusError, Message, open_bus
    from bus.bus import Subscription
    from bus.follow import follow

    asked = asyncio.Event()

    class Stubborn(Subscription):
        async def get(self) -> Message:
            asked.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                raise BusError("connection lost") from None
            raise AssertionError("unreachable")

        async def close(self) -> None:
            return None

    bus = open_bus("memory://")
    try:
        task = asyncio.create_task(follow(bus, ("a.topic",), lambda _: None, "test", Stubborn()))
        await asyncio.wait_for(asked.wait(), 5)
        began = time.monotonic()
        assert await stop([task], "following", within=3)
        assert time.monotonic() - began < 1.5  # ended by itself (not after the first backoff's resubscribe)
    finally:
        await bus.close()
