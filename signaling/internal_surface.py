"""What a media node behind front doors answers over HTTP (PUBLIC_HTTP=false): only what the cluster's
other processes and its monitoring ask of it.

Front doors pass HLS and DASH requests on to the stream's node (`signaling.hls.relay`); Prometheus
scrapes `/metrics`; supervisors ask `/healthz` and `/readyz`. Everything else (the API, the pages, chat
over WebSocket, WHIP/WHEP straight to the node) is the front doors' to serve, where sign-in, rate
limits and CORS live: here it is a 404 problem document, whatever the method, so a node reachable by
mistake from outside offers no second way in.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from signaling.api.problems import problem_response
from signaling.errors import NotFound

PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
PREFIXES = ("/hls/", "/dash/")


def internal_only() -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path in PATHS or path.startswith(PREFIXES):
            return await handler(request)
        return problem_response(NotFound(
            "this is a media node: the cluster's front doors serve its API and pages (PUBLIC_HTTP=false)"))

    return middleware
