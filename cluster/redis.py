"""The registry of a cluster, in Redis.

Each node's record is a key that expires after NODE_TTL (Redis keeps the time, so hosts' clocks need
not agree); a set lists the ids, so reading the cluster costs two commands whatever else the Redis
holds. Ids whose key has expired are taken out of the set by whoever reads it.
"""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cluster.registry import NODE_TTL, LiveNode, NodeRecord, NodeRegistry


class RegistryError(Exception):
    """The registry's store could not be reached."""


class RedisRegistry(NodeRegistry):
    def __init__(self, url: str, prefix: str = "tally:", ttl: float = NODE_TTL) -> None:
        self._client: aioredis.Redis = aioredis.Redis.from_url(url)
        self._ids = f"{prefix}nodes"
        self._prefix = f"{prefix}node:"
        self._ttl_ms = round(ttl * 1000)

    async def announce(self, record: NodeRecord) -> None:
        data = json.dumps(record.to_wire(), separators=(",", ":"))
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(self._prefix + record.id, data, px=self._ttl_ms)
                pipe.sadd(self._ids, record.id)
                await pipe.execute()
        except RedisError as exc:
            raise RegistryError(str(exc)) from exc

    async def withdraw(self, node_id: str) -> None:
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(self._prefix + node_id)
                pipe.srem(self._ids, node_id)
                await pipe.execute()
        except RedisError as exc:
            raise RegistryError(str(exc)) from exc

    async def live(self) -> list[LiveNode]:
        try:
            ids = sorted(i.decode() if isinstance(i, bytes) else i for i in await self._client.smembers(self._ids))
            if not ids:
                return []
            async with self._client.pipeline(transaction=False) as pipe:
                for node_id in ids:
                    pipe.get(self._prefix + node_id)
                    pipe.pttl(self._prefix + node_id)
                answers = await pipe.execute()
            gone = [i for i, value in zip(ids, answers[0::2]) if value is None]
            if gone:
                await self._client.srem(self._ids, *gone)
        except RedisError as exc:
            raise RegistryError(str(exc)) from exc
        nodes = []
        for value, remaining_ms in zip(answers[0::2], answers[1::2]):
            if value is None:
                continue
            try:
                record = NodeRecord.from_wire(json.loads(value))
            except (ValueError, TypeError, KeyError):  # not a record this version can read: skip it
                continue
            nodes.append(LiveNode(record, max(self._ttl_ms - max(remaining_ms, 0), 0) / 1000))
        return nodes

    async def close(self) -> None:
        await self._client.aclose()
