"""The cluster as the registry sees it: live nodes, their load and their streams (admins only)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aiohttp import web

from cluster import LiveNode, NodeRegistry, RegistryError
from signaling.api.endpoint import Access, Call, Endpoint, json_response
from signaling.api.schemas import ClusterOut, NodeLoadOut, NodeOut, NodeStreamOut
from signaling.auth.roles import Role
from signaling.errors import Unavailable

log = logging.getLogger(__name__)

REGISTRY_TIMEOUT = 3.0  # seconds


class ClusterApi:
    def __init__(self, registry: NodeRegistry) -> None:
        self._registry = registry

    async def cluster(self, call: Call[None]) -> web.StreamResponse:
        try:
            async with asyncio.timeout(REGISTRY_TIMEOUT):
                nodes = await self._registry.live()
        except (RegistryError, TimeoutError) as exc:  # the registry's store is down: say so, as /readyz does
            log.warning("could not read the node registry: %s", exc)
            raise Unavailable("the node registry cannot be reached", retry_after=3) from None
        return json_response(ClusterOut(nodes=[_node_out(n) for n in nodes]))

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("GET", "/api/cluster", self.cluster, "Live media nodes with their load and streams",
                     Access(Role.ADMIN), "admin", response=ClusterOut, errors=(401, 403, 503)),
        ]


def _node_out(node: LiveNode) -> NodeOut:
    record, load = node.record, node.record.load
    return NodeOut(
        id=record.id,
        http_url=record.http_url,
        media_addresses=list(record.media_addresses),
        max_viewers=record.max_viewers,
        started_at=datetime.fromtimestamp(record.started_at, UTC),
        last_seen_ms=round(node.age * 1000),
        draining=record.draining,
        version=record.version,
        load=NodeLoadOut.model_validate(load.model_dump()),
        streams=[NodeStreamOut.model_validate(s.model_dump()) for s in record.streams],
    )
