"""The Redis bus: pub/sub on one Redis shared by every process.

A subscription reads with a timeout so redis-py's health check runs: a connection that died without
a word (a NAT, a failover) is found within HEALTH_CHECK seconds, not never. Datagrams that are not bus
messages (anyone with access to Redis can publish) are skipped and counted.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bus.bus import Bus, BusError, Subscription
from bus.message import Message

log = logging.getLogger(__name__)

HEALTH_CHECK = 5.0  # seconds


class RedisSubscription(Subscription):
    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub
        self._closed = False
        self.malformed = 0

    async def get(self) -> Message:
        while True:
            try:
                raw = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=HEALTH_CHECK)
            except RedisError as exc:
                raise BusError(str(exc)) from exc
            if raw is None or raw["type"] != "message":
                continue
            try:
                return Message.decode(raw["data"])
            except ValueError as exc:
                self.malformed += 1
                if self.malformed <= 3:
                    log.warning("skipped a message on %r that is not a bus message: %s", raw.get("channel"), exc)

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
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, health_check_interval=HEALTH_CHECK, socket_keepalive=True, socket_connect_timeout=2.0
        )

    async def publish(self, message: Message) -> int:
        try:
            return int(await self.client.publish(message.topic, message.encode()))
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
