"""What the HLS and DASH origins share: finding a request's live ladder and rendition, starting the
ladder on the first request, and passing a request on to the node that originates the stream."""

from __future__ import annotations

from aiohttp import web

from recorder.hls.live import LiveHls
from recorder.hls.playlist import RenditionWindow
from signaling.api.endpoint import Call, Handler, name_param
from signaling.errors import NotFound, Unavailable
from signaling.hls.relay import HlsRelay
from signaling.hls.service import HlsService

NO_STORE = {"Cache-Control": "no-store"}


class LadderRequests:
    def __init__(self, hls: HlsService, relay: HlsRelay | None) -> None:
        self.hls = hls
        self.relay = relay

    def or_relay(self, handler: Handler) -> Handler:
        """`handler`, for channels this process serves; the origin's answer for the others."""

        async def handle(call: Call[None]) -> web.StreamResponse:
            if self.relay is not None:
                name = name_param(call.request, "channel")
                if not self.hls.serves(name):
                    answer = await self.relay.forward(call.request, name)
                    if answer is not None:
                        return answer
            return await handler(call)

        handle.__name__ = getattr(handler, "__name__", "ladder")
        return handle

    def live(self, request: web.Request) -> LiveHls:
        name = name_param(request, "channel")
        live = self.hls.ensure(name)  # starts the ladder on the first request
        if live is None:
            raise NotFound(f"{name} is not live", headers=NO_STORE)
        stream = request.match_info.get("stream")
        if stream is not None and stream != live.ladder_id:
            raise NotFound(f"stream {stream[:40]!r} of {name} is over", headers=NO_STORE)
        return live

    async def ready(self, request: web.Request) -> LiveHls:
        """The live ladder once its first segment is out (503 if that takes too long)."""
        live = self.live(request)
        wait = live.playlist_options.target_duration * 3 + 3  # the first segment, after the first sender reports
        if not await live.wait(lambda: live.ready, wait):
            raise Unavailable("the stream's first segment is not ready yet", retry_after=1, headers=NO_STORE)
        return live

    async def window(self, request: web.Request) -> tuple[LiveHls, RenditionWindow]:
        live = self.live(request)
        name = request.match_info["rendition"]
        window = live.window(name)
        if window is None and not live.ready:  # a ladder (re)started by this request: its renditions come
            await live.wait(lambda: live.window(name) is not None or live.ready, 3 * live.playlist_options.target_duration)
            window = live.window(name)
        if window is None:
            if not live.ready and not live.ended:
                raise Unavailable("the stream's first segment is not ready yet", retry_after=1, headers=NO_STORE)
            raise NotFound(f"there is no rendition {name[:40]!r}", headers=NO_STORE)
        return live, window
