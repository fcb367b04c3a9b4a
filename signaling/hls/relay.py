"""HLS and DASH of a stream another node originates: the request goes on to that node's HTTP service.

Any process serves `/hls/…` for any stream: a front door (or a node) that does not carry the channel
finds the node that does in the registry and passes the request on, blocking playlist reloads
included, with the origin's status, type and cache headers (a DASH segment being made is passed on
chunk by chunk as it comes); the CDN edge in front sees one origin. A
passed-on request carries X-Tally-Hop and is never passed on again (a stale registry cannot make a loop).
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web

from signaling.cluster.directory import NodeDirectory
from signaling.errors import Unavailable

log = logging.getLogger(__name__)

HOP = "X-Tally-Hop"
PASSED_HEADERS = ("Content-Type", "Cache-Control", "Retry-After", "Access-Control-Allow-Origin")
TIMEOUT = aiohttp.ClientTimeout(total=30, connect=3)  # a blocking reload waits up to three target durations
MAX_BODY = 32 * 1024 * 1024  # bytes: a segment of the top rendition is a few MB at most


async def _whole_body(answer: aiohttp.ClientResponse) -> bytes:
    """The origin's whole answer, up to MAX_BODY. (`content.read(n)` returns what has come so far: a
    part larger than a TCP connection's first flight came out cut short, and went on as a complete,
    immutable 200.)"""
    chunks: list[bytes] = []
    size = 0
    async for chunk in answer.content.iter_any():
        size += len(chunk)
        if size > MAX_BODY:
            raise Unavailable("the origin's answer is too large", headers={"Cache-Control": "no-store"})
        chunks.append(chunk)
    if answer.content_length is not None and size != answer.content_length:
        raise aiohttp.ClientPayloadError(f"{size} of {answer.content_length} bytes")
    return b"".join(chunks)


class HlsRelay:
    def __init__(self, directory: NodeDirectory, node_id: str) -> None:
        self._directory = directory
        self._node_id = node_id
        self._http: aiohttp.ClientSession | None = None
        self.relayed = 0

    async def forward(self, request: web.Request, channel: str) -> web.StreamResponse | None:
        """The origin's answer, or None when this process should answer itself (the request was passed
        on already, or no other node serves the channel)."""
        if HOP in request.headers:
            return None
        node = await self._directory.serving_hls(channel)
        if node is None or node.id == self._node_id:
            return None
        if self._http is None:
            # No connection limit: each DASH player at the live edge holds one answer open for about a
            # segment (they are streamed, not collapsed), beside the HLS blocking reloads.
            self._http = aiohttp.ClientSession(timeout=TIMEOUT, auto_decompress=False,
                                               connector=aiohttp.TCPConnector(limit=0))
        try:
            async with self._http.get(node.http_url + request.path_qs, headers={HOP: self._node_id}) as answer:
                headers = {name: answer.headers[name] for name in PASSED_HEADERS if name in answer.headers}
                if answer.status == 200 and answer.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    return await self._stream(request, answer, headers)  # a DASH segment being made
                if answer.content_length is not None and answer.content_length > MAX_BODY:
                    raise Unavailable("the origin's answer is too large", headers={"Cache-Control": "no-store"})
                body = await _whole_body(answer)
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("hls %s: origin %s did not answer %s: %s", channel, node.id, request.path, exc)
            raise Unavailable("the stream's origin did not answer; try again", retry_after=1,
                              headers={"Cache-Control": "no-store"}) from None
        self.relayed += 1
        return web.Response(status=status, body=body, headers=headers)

    async def _stream(self, request: web.Request, answer: aiohttp.ClientResponse,
                      headers: dict[str, str]) -> web.StreamResponse:
        """Pass a chunked answer on chunk by chunk, as the origin sends it (up to MAX_BODY)."""
        self.relayed += 1
        response = web.StreamResponse(headers={**headers, "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        passed = 0
        try:
            async for chunk in answer.content.iter_any():
                passed += len(chunk)
                if passed > MAX_BODY:
                    raise aiohttp.ClientPayloadError(f"more than {MAX_BODY} bytes")
                await response.write(chunk)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the player went away
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The headers are sent: closing the connection short of the last chunk is all that is left
            # (the player, or a cache, sees an incomplete answer, not a short segment).
            log.warning("dash: the origin's answer to %s broke off: %s", request.path, exc)
            if request.transport is not None:
                request.transport.close()
        return response

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
