"""The registry of a cluster, in Redis.

Each node's record is a key that expires after NODE_TTL (Redis keeps the time, so hosts' clocks need
not agree); a set lists the ids, so reading the cluster costs two round trips whatever else the Redis
holds. Ids whose key has expired are taken out of the set by whoever reads it, atomically (a script
that removes an id only if its key is still missing), so a node announcing at that moment stays listed.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cluster.registry import NODE_TTL, LiveNode, NodeRecord, NodeRegistry, RegistryError

# KEYS[1] is the set of ids, KEYS[2..] the record keys of the ids in ARGV.
_PRUNE = """
for i, node_id in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then redis.call('SREM', KEYS[1], node_id) end
end
return 0
"""


class RedisRegistry(NodeRegistry):
    def __init__(self, url: str, prefix: str = "tally:", ttl: float = NODE_TTL) -> None:
        # Bounded waits: a Redis that is down or unreachable is an error within a second or two, never a hang.
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=2.0, max_connections=32
        )
        self._prune = self._client.register_script(_PRUNE)
        self._ids = f"{prefix}nodes"
        self._prefix = f"{prefix}node:"
        self._ttl_ms = round(ttl * 1000)

    async def announce(self, record: NodeRecord) -> None:
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(self._prefix + record.id, record.to_wire(), px=self._ttl_ms)
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
            members = await self._client.smembers(self._ids)
            ids = sorted(i.decode(errors="replace") if isinstance(i, bytes) else str(i) for i in members)
            if not ids:
                return []
            async with self._client.pipeline(transaction=False) as pipe:
                for node_id in ids:
                    pipe.get(self._prefix + node_id)
                    pipe.pttl(self._prefix + node_id)
                answers = await pipe.execute()
            gone = [i for i, value in zip(ids, answers[0::2]) if value is None]
            if gone:
                await self._prune(keys=[self._ids, *(self._prefix + i for i in gone)], args=gone)
        except RedisError as exc:
            raise RegistryError(str(exc)) from exc
        nodes = []
        for value, remaining_ms in zip(answers[0::2], answers[1::2]):
            record = NodeRecord.from_wire(value) if value is not None else None
            if record is not None:
                nodes.append(LiveNode(record, max(self._ttl_ms - max(int(remaining_ms), 0), 0) / 1000))
        return nodes

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except RedisError:
            pass
