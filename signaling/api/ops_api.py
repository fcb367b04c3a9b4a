"""/healthz, /readyz, /metrics and /api/openapi.json."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bus import Bus
from signaling.api.endpoint import ANYONE, Call, Endpoint, json_response
from signaling.api.metrics import HttpMetrics
from signaling.api.schemas import HealthOut
from signaling.db.database import Database

log = logging.getLogger(__name__)


class OpsApi:
    def __init__(self, db: Database, bus: Bus, metrics: HttpMetrics, openapi: Callable[[], dict[str, Any]]) -> None:
        self._db = db
        self._bus = bus
        self._metrics = metrics
        self._openapi = openapi
        self._openapi_cache: dict[str, Any] | None = None

    async def healthz(self, call: Call[None]) -> web.StreamResponse:
        return json_response(HealthOut(status="ok"))

    async def readyz(self, call: Call[None]) -> web.StreamResponse:
        checks: dict[str, str] = {}
        for name, probe in (("database", self._db.ping), ("bus", self._bus.ping)):
            try:
                await probe()
                checks[name] = "ok"
            except Exception as exc:  # any failure means not ready; say which
                log.warning("readiness check %s failed: %s", name, exc)
                checks[name] = f"failed: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return json_response(HealthOut(status="ok" if ok else "unavailable", checks=checks), status=200 if ok else 503)

    async def metrics(self, call: Call[None]) -> web.StreamResponse:
        return self._metrics.exposition()

    async def openapi(self, call: Call[None]) -> web.StreamResponse:
        if self._openapi_cache is None:
            self._openapi_cache = self._openapi()
        return web.json_response(self._openapi_cache)

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("GET", "/healthz", self.healthz, "Liveness: the process answers", ANYONE, "ops",
                     response=HealthOut),
            Endpoint("GET", "/readyz", self.readyz, "Readiness: the database and the bus answer", ANYONE, "ops",
                     response=HealthOut, errors=(503,)),
            Endpoint("GET", "/metrics", self.metrics, "Prometheus metrics (text exposition format)", ANYONE, "ops",
                     extra={"produces": "text/plain"}),
            Endpoint("GET", "/api/openapi.json", self.openapi, "This API's OpenAPI 3.1 description", ANYONE, "ops",
                     extra={"produces": "application/json"}),
        ]
