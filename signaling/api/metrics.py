"""Prometheus metrics for HTTP requests, on a registry of the app's own (never the process-global one)."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "tally_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "tally_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        # A number that must stay flat under churn (loadtest/soak.py): a task per session that is never
        # cancelled shows here first.
        Gauge("tally_process_asyncio_tasks", "asyncio tasks alive in this process", registry=registry).set_function(
            lambda: len(asyncio.all_tasks()))

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            # The route template, never the raw path: one series per route, not per channel name.
            route = resource.canonical if resource is not None else "unmatched"
            self.requests.labels(request.method, route, str(status)).inc()
            self.latency.labels(request.method, route).observe(time.perf_counter() - start)

    def exposition(self) -> web.Response:
        response = web.Response(body=generate_latest(self.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response


def register_spool_metrics(registry: CollectorRegistry, spool: Path) -> None:
    """The disk under the recording spool, read when scraped (recordings stop when it fills)."""

    def usage() -> tuple[int, int]:
        folder = spool
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent  # not made yet: the disk it will be on
        try:
            total, _, free = shutil.disk_usage(folder)
        except OSError:
            return 0, 0
        return total, free

    Gauge("tally_recording_spool_size_bytes", "size of the disk under the recording spool",
          registry=registry).set_function(lambda: usage()[0])
    Gauge("tally_recording_spool_free_bytes", "free space on the disk under the recording spool",
          registry=registry).set_function(lambda: usage()[1])
