"""The address a request came from, for rate limits (behind a trusted proxy: X-Forwarded-For)."""

from __future__ import annotations

from aiohttp import web


def client_address(request: web.Request, trust_forwarded_for: bool) -> str:
    if trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        first = forwarded.split(",")[0].strip()
        if first:
            return first[:64]
    return request.remote or "unknown"
