"""The LL-DASH origin: a live ladder's MPD and its segments, from the same memory as its LL-HLS.

A segment being made is answered at once with chunked transfer: its parts so far, then each part as
the packager closes it, until the segment is complete (players ask a part after it starts, as the
MPD's `availabilityTimeOffset` allows). A segment asked for up to two ahead of the newest waits for
it. Complete segments and init segments are immutable; the MPD lives a second (its
`minimumUpdatePeriod` is a segment); `/dash/time` is the clock players synchronise with (UTCTiming).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from recorder.hls.mpd import DashOptions, Video, manifest
from recorder.hls.packager import Part
from recorder.hls.transcoder import AUDIO
from signaling.api.endpoint import ANYONE, Call, Endpoint
from signaling.api.hls_api import IMMUTABLE, media_response, text_response
from signaling.api.ladder_requests import NO_STORE, LadderRequests
from signaling.errors import NotFound, Unavailable

MPD = "application/dash+xml"
_OBJECT = re.compile(r"^(?:init(\d{1,9})\.mp4|(\d{1,9})\.m4s)$")
AHEAD = 2  # segments a request may ask for ahead of the newest one (it waits for it)


class DashApi:
    def __init__(self, ladders: LadderRequests, registry: CollectorRegistry, target_latency: float,
                 public_url: str = "") -> None:
        self._ladders = ladders
        self._target_latency = target_latency
        self._public_url = public_url.rstrip("/")
        self.requests = Counter("tally_dash_requests", "DASH objects asked of this origin", ["object"],
                                registry=registry)
        self.chunked = Counter("tally_dash_chunked_segments", "DASH segments sent chunk by chunk as they were made",
                               registry=registry)

    async def mpd(self, call: Call[None]) -> web.StreamResponse:
        self.requests.labels("mpd").inc()
        live = await self._ladders.ready(call.request)
        audio = live.window(AUDIO.name)  # of a stream with video, or of an audio-only one
        options = DashOptions(live.options.segment, live.playlist_options.window, self._target_latency)
        videos = [Video(window, bandwidth, codec) for window, bandwidth, codec in live.variants() if window is not audio]
        # The clock's URL from settings, never from the request's Host (a cached MPD would carry a forged
        # one to every viewer); without PUBLIC_URL, the path: players on the origin's own pages resolve it.
        text = manifest(videos, audio, live.audio_bandwidth, options, live.started_at, time.time(), live.ended,
                        f"{live.ladder_id}/", f"{self._public_url}/dash/time")
        # An ended stream's MPD is cached briefly: the channel's next stream has the same MPD URL.
        return text_response(text, MPD, "public, max-age=2" if live.ended else "public, max-age=1")

    async def media(self, call: Call[None]) -> web.StreamResponse:
        request = call.request
        live, window = await self._ladders.window(request)
        raw = request.match_info["object"]
        match = _OBJECT.match(raw)
        if match is None:
            raise NotFound(f"there is no {raw[:40]!r} in this rendition", headers=NO_STORE)
        if match[1] is not None:
            self.requests.labels("init").inc()
            init = window.inits.get(int(match[1]))
            if init is None:
                raise NotFound(f"there is no init segment {match[1]}", headers=NO_STORE)
            return media_response(init.data, "video/mp4")
        self.requests.labels("segment").inc()
        number = int(match[2])
        step = live.options.segment
        newest = window.segments[-1].slot if window.segments else -1
        if number > newest:
            if number > newest + AHEAD or live.ended:
                raise NotFound(f"segment {number} is not made yet", headers=NO_STORE)
            await live.wait(lambda: bool(window.at_slot(number, step)), (number - newest + 1) * step + 1)
        segments = window.at_slot(number, step)
        if not segments:
            if window.segments and window.segments[-1].slot < number and not live.ended:
                raise Unavailable(f"segment {number} did not start in time", retry_after=1, headers=NO_STORE)
            raise NotFound(f"segment {number} is not in the window", headers=NO_STORE)
        if window.slot_complete(segments) or (live.ended and all(s.complete for s in segments)):
            return media_response(b"".join(s.data for s in segments), "video/mp4")
        # Being made: what there is now, then each part as it comes (chunked transfer).
        response = web.StreamResponse(headers={"Content-Type": "video/mp4", "Cache-Control": IMMUTABLE,
                                               "Access-Control-Allow-Origin": "*", "X-Accel-Buffering": "no",
                                               "X-Content-Type-Options": "nosniff"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        self.chunked.inc()
        sent = 0  # parts of the slot sent, over its segments
        deadline = time.monotonic() + 3 * step + 2  # longer: a stalled stream, end the answer

        def parts() -> list[Part]:
            return [part for segment in window.at_slot(number, step) for part in segment.parts]

        try:
            while True:
                for part in parts()[sent:]:
                    await response.write(part.data)
                    sent += 1
                done = window.slot_complete(window.at_slot(number, step))
                if done or live.ended or time.monotonic() > deadline:
                    break
                await live.wait(lambda: len(parts()) > sent or window.slot_complete(window.at_slot(number, step)),
                                deadline - time.monotonic())
            if window.slot_complete(window.at_slot(number, step)) or live.ended:
                await response.write_eof()
            elif request.transport is not None:  # stalled: an incomplete answer, never a short segment in a cache
                request.transport.close()
        except ConnectionResetError:
            pass  # the player went away
        return response

    async def clock(self, call: Call[None]) -> web.StreamResponse:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return text_response(now, "text/plain", "no-store")

    def endpoints(self) -> list[Endpoint]:
        ladders = self._ladders
        return [
            Endpoint("GET", "/dash/time", self.clock, "The origin's clock (ISO 8601), the MPD's UTCTiming source",
                     ANYONE, "dash", extra={"produces": "text/plain"}),
            Endpoint("GET", "/dash/{channel}/manifest.mpd", ladders.or_relay(self.mpd),
                     "LL-DASH manifest of the channel's live ladder (the same CMAF media as its LL-HLS)", ANYONE,
                     "dash", errors=(404, 503), extra={"produces": MPD}),
            Endpoint("GET", "/dash/{channel}/{stream}/{rendition}/{object}", ladders.or_relay(self.media),
                     "Init segment (initN.mp4) or segment (N.m4s, sent in chunks while it is being made)", ANYONE,
                     "dash", errors=(404, 503), extra={"produces": "video/mp4"}),
        ]
