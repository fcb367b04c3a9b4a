"""The web app: HTML pages and their ES modules, straight from web/ (no build step)."""

from __future__ import annotations

import logging

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

log = logging.getLogger(__name__)

PAGES = {
    "/": "index.html",
    "/login": "login.html",
    "/signup": "signup.html",
    "/settings": "settings.html",
    "/auth/complete": "auth-complete.html",
    "/recordings/{id}": "recording.html",
    "/analytics/{channel}": "analytics.html",
    "/analytics": "analytics.html",  # the whole site's, for admins
    "/studio": "studio.html",
    "/admin": "admin.html",
    "/notifications": "notifications.html",
}


def security_headers_for(media_origins: tuple[str, ...] = ()) -> dict[str, str]:
    """The pages' headers; `media_origins` may serve recordings and pictures (an S3 endpoint)."""
    extra = "".join(f" {origin}" for origin in media_origins)
    return {
        "Content-Security-Policy": f"default-src 'self'; img-src 'self' https: data:{extra}; media-src 'self' blob: https:{extra}; "
        "connect-src 'self' ws: wss:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


NOT_FOUND_PAGE = "404.html"

ChannelExists = Callable[[str], Awaitable[bool]]


def add_web_routes(app: web.Application, root: Path, media_origins: tuple[str, ...] = (),
                   channel_exists: ChannelExists | None = None) -> None:
    headers = security_headers_for(media_origins)
    named: set[str] = set()
    for path, name in PAGES.items():
        if (root / name).exists():
            # A page served on two paths is named once (route names are unique).
            app.router.add_get(path, _page(root / name, headers), name=None if name in named else f"page:{name}")
            named.add(name)
    if (root / "watch.html").exists():
        app.router.add_get("/watch/{channel}", _watch_page(root, headers, channel_exists), name="page:watch.html")
    # The installable app: its manifest, and the service worker at the root so its scope is every page.
    for path, name, kind in (("/sw.js", "sw.js", "text/javascript"),
                             ("/manifest.webmanifest", "manifest.webmanifest", "application/manifest+json")):
        if (root / name).exists():
            app.router.add_get(path, _typed(root / name, headers, kind), name=f"app:{name}")
    static = root / "static"
    if static.is_dir():
        app.router.add_static("/static/", static, name="static", append_version=False)
    hls_js = root / "node_modules" / "hls.js" / "dist"  # installed by `make` (npm ci in web/)
    if hls_js.is_dir():
        app.router.add_static("/vendor/hls.js/", hls_js, name="vendor-hls", append_version=False)
    else:
        log.warning("hls.js is not installed (run `make web-deps`): the watch page cannot fall back to HLS")
    dashjs = root / "node_modules" / "dashjs" / "dist" / "modern" / "esm"
    if dashjs.is_dir():
        app.router.add_static("/vendor/dashjs/", dashjs, name="vendor-dashjs", append_version=False)
    else:
        log.warning("dash.js is not installed (run `make web-deps`): the watch page cannot play DASH")
    uplot = root / "node_modules" / "uplot" / "dist"
    if uplot.is_dir():
        app.router.add_static("/vendor/uplot/", uplot, name="vendor-uplot", append_version=False)
    else:
        log.warning("uPlot is not installed (run `make web-deps`): the analytics page draws no chart")


def _page(file: Path, headers: dict[str, str], status: int = 200) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return _file(file, headers, status)

    return handle


def _file(file: Path, headers: dict[str, str], status: int = 200) -> web.StreamResponse:
    response = web.FileResponse(file, headers={**headers, "Cache-Control": "no-cache"})
    response.set_status(status)
    return response


def _typed(file: Path, headers: dict[str, str], content_type: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        response = _file(file, headers)
        response.content_type = content_type
        return response

    return handle


def _watch_page(root: Path, headers: dict[str, str], channel_exists: ChannelExists | None) -> Handler:
    """A channel's page, or the HTML 404 page (with its status) when there is no such channel."""
    missing = _NotFoundPage(root, headers)

    async def handle(request: web.Request) -> web.StreamResponse:
        if channel_exists is not None and not await channel_exists(request.match_info["channel"]):
            found = missing.response()
            if found is not None:
                return found
        return _file(root / "watch.html", headers)

    return handle


class _NotFoundPage:
    """The HTML 404 page, read once and served from memory (a FileResponse would answer a Range or
    If-None-Match with 206 or 304 instead of the 404)."""

    def __init__(self, root: Path, headers: dict[str, str]) -> None:
        self._file = root / NOT_FOUND_PAGE
        self._headers = {**headers, "Cache-Control": "no-cache"}
        self._body: bytes | None = None

    def response(self) -> web.Response | None:
        if self._body is None:
            if not self._file.exists():
                return None
            self._body = self._file.read_bytes()
        return web.Response(status=404, body=self._body, content_type="text/html", charset="utf-8",
                            headers=self._headers)


def not_found_pages(root: Path, media_origins: tuple[str, ...] = ()) -> Middleware:
    """A browser that navigates to a path no route serves gets the HTML 404 page, not the JSON problem
    document an API client gets (told apart by `Accept: text/html`, which only navigations send).
    A route's own 404 (an HLS segment, an API resource) is left as it is."""
    page = _NotFoundPage(root, security_headers_for(media_origins))

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        unrouted = getattr(request.match_info, "http_exception", None) is not None
        if (response.status == 404 and unrouted and request.method in ("GET", "HEAD")
                and "text/html" in request.headers.get("Accept", "") and not request.path.startswith("/api/")):
            return page.response() or response
        return response

    return middleware


HSTS = "max-age=63072000; includeSubDomains"  # two years, as browsers' preload lists ask


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    transport = request.transport
    if transport is not None and transport.get_extra_info("sslcontext") is not None:
        # Answered over TLS by this process itself (TLS_CERT): only then may it speak for the host.
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response
