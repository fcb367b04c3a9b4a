"""The bus interface. Implementations provide raw publish/subscribe; request/reply is built on it here."""

from __future__ import annotations

import asyncio
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from bus.message import Message
from lifecycle.tasks import STOP_WITHIN, cancelling, stop

log = logging.getLogger(__name__)

Handler = Callable[[Message], Awaitable[dict[str, Any]]]


class BusError(Exception):
    """The bus could not carry a message."""


class BusTimeout(BusError):
    """Nobody answered a request in time."""


class NoResponder(BusError):
    """Nobody serves the topic a request went to (its process is gone)."""


class Subscription(ABC):
    """Messages on one or more topics, in order, until closed."""

    @abstractmethod
    async def get(self) -> Message: ...

    @abstractmethod
    async def close(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            yield await self.get()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Bus(ABC):
    """Publish/subscribe plus request/reply between processes."""

    def __init__(self) -> None:
        self._responders: set[asyncio.Task[None]] = set()

    @abstractmethod
    async def publish(self, message: Message) -> int:
        """Send `message`; how many subscriptions (in any process) it reached."""

    @abstractmethod
    async def subscribe(self, *topics: str) -> Subscription:
        """Subscribe before anything relies on delivery: messages published earlier are not replayed."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise BusError when the bus cannot carry messages."""

    async def request(self, topic: str, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """The answer of whoever serves `topic`: NoResponder at once when nobody does, BusTimeout when no
        answer comes within `timeout` seconds (all of it: subscribing, asking, waiting)."""
        reply_to = f"_reply.{uuid.uuid4().hex}"
        try:
            async with asyncio.timeout(timeout):
                async with await self.subscribe(reply_to) as replies:
                    if not await self.publish(Message(topic, payload, reply_to=reply_to)):
                        raise NoResponder(f"nobody serves {topic!r}")
                    answer = await replies.get()
        except TimeoutError:
            raise BusTimeout(f"no answer on {topic!r} within {timeout} s") from None
        return answer.payload

    async def serve(self, topic: str, handler: Handler, concurrency: int = 64) -> asyncio.Task[None]:
        """Answer requests on `topic` with `handler` until the bus closes or the returned task is
        cancelled: up to `concurrency` at once (a slow request does not hold up the others), through
        losses of the bus (it subscribes again)."""
        subscription = await self.subscribe(topic)
        task = asyncio.create_task(self._respond(topic, subscription, handler, concurrency), name=f"bus-serve:{topic}")
        self._responders.add(task)
        task.add_done_callback(self._responders.discard)
        task.add_done_callback(_log_end)
        return task

    async def _respond(self, topic: str, subscription: Subscription | None, handler: Handler,
                       concurrency: int) -> None:
        slots = asyncio.Semaphore(concurrency)
        answering: set[asyncio.Task[None]] = set()
        delay = 0.0
        try:
            while not cancelling():
                if subscription is None:
                    await asyncio.sleep(delay)
                    try:
                        subscription = await self.subscribe(topic)
                    except BusError as exc:
                        delay = min(max(delay * 2, 0.5), 5.0)
                        log.debug("cannot serve %s yet (retrying in %.1f s): %s", topic, delay, exc)
                        continue
                    log.info("serving %s again", topic)
                try:
                    async for message in subscription:
                        if message.reply_to is None:
                            continue
                        await slots.acquire()
                        task = asyncio.create_task(self._answer(message, message.reply_to, handler, slots))
                        answering.add(task)
                        task.add_done_callback(answering.discard)
                except BusError as exc:
                    log.warning("lost the bus while serving %s: %s; subscribing again", topic, exc)
                    await subscription.close()
                    subscription = None
                    delay = 0.5
        finally:
            await stop(answering, f"the answers on {topic}")
            if subscription is not None:
                await subscription.close()

    async def _answer(self, message: Message, reply_to: str, handler: Handler, slots: asyncio.Semaphore) -> None:
        try:
            try:
                answer = await handler(message)
            except Exception as exc:  # a failing handler answers with an error, it does not stop serving
                log.exception("bus handler for %s failed", message.topic)
                answer = {"error": type(exc).__name__}
            try:
                await self.publish(Message(reply_to, answer))
            except BusError as exc:  # the asker times out; nothing else to do
                log.warning("could not answer on %s: %s", message.topic, exc)
        finally:
            slots.release()

    async def close(self) -> None:
        # Each responder waits STOP_WITHIN for its answers in flight: give it the time to.
        await stop(list(self._responders), "the bus's responders", STOP_WITHIN + 2)


def _log_end(task: asyncio.Task[None]) -> None:
    """A responder ends only when cancelled; anything else is a bug to see in the log."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped serving", task.get_name(), exc_info=task.exception())
