"""The web app: HTML pages and their ES modules, straight from web/ (no build step)."""

from __future__ import annotations

import logging

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger(__name__)

PAGES = {
    "/": "index.html",
    "/login": "login.html",
    "/signup": "signup.html",
    "/settings": "settings.html",
    "/auth/complete": "auth-complete.html",
    "/watch/{channel}": "watch.html",
    "/recordings/{id}": "recording.html",
    "/studio": "studio.html",
    "/admin": "admin.html",
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


def add_web_routes(app: web.Application, root: Path, media_origins: tuple[str, ...] = ()) -> None:
    headers = security_headers_for(media_origins)
    for path, name in PAGES.items():
        if (root / name).exists():
            app.router.add_get(path, _page(root / name, headers), name=f"page:{name}")
    static = root / "static"
    if static.is_dir():
        app.router.add_static("/static/", static, name="static", append_version=False)
    hls_js = root / "node_modules" / "hls.js" / "dist"  # installed by `make` (npm ci in web/)
    if hls_js.is_dir():
        app.router.add_static("/vendor/hls.js/", hls_js, name="vendor-hls", append_version=False)
    else:
        log.warning("hls.js is not installed (run `make web-deps`): the watch page cannot fall back to HLS")


def _page(file: Path, headers: dict[str, str]) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.FileResponse(file, headers={**headers, "Cache-Control": "no-cache"})
        return response

    return handle


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response
