"""The in-process bus: the embedded default. Messages travel encoded, exactly as on Redis."""

from __future__ import annotations

import asyncio
import logging

from bus.bus import Bus, BusError, Subscription
from bus.message import Message

log = logging.getLogger(__name__)


class MemorySubscription(Subscription):
    def __init__(self, bus: MemoryBus, topics: tuple[str, ...], maxsize: int) -> None:
        self._bus = bus
        self.topics = topics
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, data: bytes) -> None:
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            # A stuck subscriber must not stall publishers (Redis drops slow clients too).
            self.dropped += 1

    async def get(self) -> Message:
        return Message.decode(await self.queue.get())

    async def close(self) -> None:
        self._bus._remove(self)


class MemoryBus(Bus):
    def __init__(self, queue_size: int = 10_000) -> None:
        super().__init__()
        self._queue_size = queue_size
        self._topics: dict[str, set[MemorySubscription]] = {}
        self._closed = False

    async def publish(self, message: Message) -> int:
        if self._closed:
            raise BusError("the bus is closed")
        data = message.encode()
        subscriptions = self._topics.get(message.topic, ())
        for subscription in subscriptions:
            subscription.offer(data)
        return len(subscriptions)

    async def subscribe(self, *topics: str) -> Subscription:
        if self._closed:
            raise BusError("the bus is closed")
        subscription = MemorySubscription(self, topics, self._queue_size)
        for topic in topics:
            self._topics.setdefault(topic, set()).add(subscription)
        return subscription

    def _remove(self, subscription: MemorySubscription) -> None:
        for topic in subscription.topics:
            subscribers = self._topics.get(topic)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._topics[topic]

    async def ping(self) -> None:
        if self._closed:
            raise BusError("the bus is closed")

    async def close(self) -> None:
        await super().close()
        self._closed = True
        self._topics.clear()
