"""The HLS origin: multivariant and media playlists (LL-HLS, blocking reload) and media, from memory.

Cache headers are written for a CDN in front: media never changes under its URL (the stream id is
part of it), so it is immutable for a year; a plain playlist lives one second; a blocking reload is
cacheable a little longer, keyed by its query (`_HLS_msn`, `_HLS_part`, `_HLS_skip`), since any answer
to it satisfies the same question; errors are never cached.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from recorder.hls.live import multivariant
from signaling.api.endpoint import ANYONE, Call, Endpoint, Handler, name_param
from signaling.api.ladder_requests import NO_STORE, LadderRequests
from signaling.errors import BadRequest, NotFound, Unavailable
from signaling.hls.relay import HOP

PLAYLIST = "application/vnd.apple.mpegurl"
IMMUTABLE = "public, max-age=31536000, immutable"
_OBJECT = re.compile(r"^(init|s|p)(\d{1,10})\.(mp4|m4s)$")
_MAX_NUMBER = 2**31


class HlsApi:
    def __init__(self, ladders: LadderRequests, registry: CollectorRegistry,
                 seen: Callable[[str, web.Request], None] | None = None) -> None:
        self._ladders = ladders
        self._seen = seen  # told of each media playlist asked for (players seen by their requests)
        hls, relay = ladders.hls, ladders.relay
        self.requests = Counter("tally_hls_requests", "HLS objects asked of this origin", ["object"], registry=registry)
        if relay is not None:
            Gauge("tally_hls_relayed", "HLS requests passed on to the stream's origin node",
                  registry=registry).set_function(lambda: relay.relayed)
        Gauge("tally_hls_ladders", "HLS ladders encoding on this node (HLS_MAX_LADDERS at most)",
              registry=registry).set_function(lambda: hls.running)

    def _seeing(self, handler: Handler) -> Handler:
        """`handler`, telling `seen` of each playlist served to a player (not of one a front door
        passes on: the door saw it)."""

        async def handle(call: Call[None]) -> web.StreamResponse:
            response = await handler(call)
            if self._seen is not None and response.status == 200 and HOP not in call.request.headers:
                self._seen(name_param(call.request, "channel"), call.request)
            return response

        handle.__name__ = getattr(handler, "__name__", "hls")
        return handle

    # --- handlers ---

    async def master(self, call: Call[None]) -> web.StreamResponse:
        self.requests.labels("multivariant").inc()
        live = await self._ladders.ready(call.request)
        text = multivariant(live, f"{live.ladder_id}/")
        return text_response(text, PLAYLIST, "public, max-age=2")

    async def media_playlist(self, call: Call[None]) -> web.StreamResponse:
        self.requests.labels("playlist").inc()
        request = call.request
        live, window = await self._ladders.window(request)
        msn = _number(request, "_HLS_msn")
        part = _number(request, "_HLS_part")
        skip = request.query.get("_HLS_skip")
        if skip not in (None, "YES", "v2"):
            raise BadRequest("_HLS_skip must be YES or v2", headers=NO_STORE)
        if part is not None and msn is None:
            raise BadRequest("_HLS_part needs _HLS_msn", headers=NO_STORE)
        target = live.playlist_options.target_duration
        cache = "public, max-age=1"
        if msn is not None:
            if msn > window.last_complete_msn + 2:
                raise BadRequest(
                    f"_HLS_msn={msn} is more than two segments ahead of the playlist ({window.last_complete_msn})",
                    headers=NO_STORE,
                )
            if not await live.wait(lambda: window.has(msn, part), 3 * target):
                raise Unavailable("that part did not appear in time", retry_after=1, headers=NO_STORE)
            cache = f"public, max-age={6 * target}"
        if window.ended:
            cache = "public, max-age=60"
        audio = live.audio_window  # reported are the renditions a player may switch to: the other videos
        reports = [(f"../{w.name}/index.m3u8", w) for w in live.windows if w is not window and w is not audio
                   and window is not audio]
        return text_response(window.media_playlist(skip=skip is not None, reports=reports), PLAYLIST, cache)

    async def media(self, call: Call[None]) -> web.StreamResponse:
        request = call.request
        live, window = await self._ladders.window(request)
        raw = request.match_info["object"]
        match = _OBJECT.match(raw)
        if match is None or (match[1] == "init") != (match[3] == "mp4") or int(match[2]) >= _MAX_NUMBER:
            raise NotFound(f"there is no {raw[:40]!r} in this rendition", headers=NO_STORE)
        kind, number = match[1], int(match[2])
        if kind == "init":
            self.requests.labels("init").inc()
            init = window.inits.get(number)
            if init is None:
                raise NotFound(f"there is no init segment {number}", headers=NO_STORE)
            return media_response(init.data, "video/mp4")
        if kind == "s":
            self.requests.labels("segment").inc()
            segment = window.segment(number)
            if segment is None:
                raise NotFound(f"segment {number} is not in the window", headers=NO_STORE)
            return media_response(segment.data, "video/mp4")
        self.requests.labels("part").inc()
        if number == window.next_part and not window.ended:  # the preload hint: answered once it exists
            await live.wait(lambda: number in window.parts, 3 * live.playlist_options.target_duration)
        found = window.parts.get(number)
        if found is None:
            raise NotFound(f"part {number} is not in the window", headers=NO_STORE)
        return media_response(found.data, "video/mp4")

    def endpoints(self) -> list[Endpoint]:
        base = "/hls/{channel}/{stream}/{rendition}"
        blocking = (
            ("_HLS_msn", "integer", "hold the answer until this media sequence number is in the playlist"),
            ("_HLS_part", "integer", "... and this part of it (needs _HLS_msn)"),
            ("_HLS_skip", "string", "YES (or v2): a delta update that skips old segments"),
        )
        return [
            Endpoint("GET", "/hls/{channel}/index.m3u8", self._ladders.or_relay(self.master),
                     "Multivariant playlist of the channel's live HLS ladder", ANYONE, "hls",
                     errors=(404, 503), extra={"produces": PLAYLIST}),
            Endpoint("GET", base + "/index.m3u8", self._seeing(self._ladders.or_relay(self.media_playlist)),
                     "A rendition's LL-HLS media playlist (blocking reload, delta updates)", ANYONE, "hls",
                     errors=(400, 404, 503), query=blocking, extra={"produces": PLAYLIST}),
            Endpoint("GET", base + "/{object}", self._ladders.or_relay(self.media),
                     "Init segment (initN.mp4), segment (sN.m4s) or part (pN.m4s) of a rendition", ANYONE, "hls",
                     errors=(404, 503), extra={"produces": "video/mp4"}),
        ]


def _number(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or int(raw) >= _MAX_NUMBER:
        raise BadRequest(f"{name} must be a whole number", headers=NO_STORE)
    return int(raw)


def text_response(text: str, content_type: str, cache: str) -> web.Response:
    return web.Response(
        body=text.encode(),
        headers={"Content-Type": content_type, "Cache-Control": cache, "Access-Control-Allow-Origin": "*"},
    )


def media_response(data: bytes, content_type: str) -> web.Response:
    return web.Response(
        body=data, headers={"Content-Type": content_type, "Cache-Control": IMMUTABLE, "Access-Control-Allow-Origin": "*"}
    )
