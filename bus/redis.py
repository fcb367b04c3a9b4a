"""The Redis bus: pub/sub on one Redis shared by every process."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bus.bus import Bus, BusError, Subscription
from bus.message import Message


class RedisSubscription(Subscription):
    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub
        self._closed = False

    async def get(self) -> Message:
        while True:
            try:
                raw = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            except RedisError as exc:
                raise BusError(str(exc)) from exc
            if raw is not None and raw["type"] == "message":
                return Message.decode(raw["data"])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._pubsub.aclose()
        except RedisError:
            pass


class RedisBus(Bus):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.client: aioredis.Redis = aioredis.Redis.from_url(url)

    async def publish(self, message: Message) -> None:
        try:
            await self.client.publish(message.topic, message.encode())
        except RedisError as exc:
            raise BusError(str(exc)) from exc

    async def subscribe(self, *topics: str) -> Subscription:
        pubsub = self.client.pubsub()
        try:
            await pubsub.subscribe(*topics)
        except RedisError as exc:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise BusError(str(exc)) from exc
        return RedisSubscription(pubsub)

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except RedisError as exc:
            raise BusError(str(exc)) from exc

    async def close(self) -> None:
        await super().close()
        await self.client.aclose()
