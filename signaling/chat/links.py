"""The two kinds of chat connection: a WebSocket (`GET /ws`) and a WebRTC data channel labelled `chat`.

Both send without awaiting and watch how much they have queued: past `max_buffered` bytes the client
is not keeping up, and the link closes rather than grow without bound (the client reconnects and reads
the history).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web

from sfu.aiortc_internals import send_texts
from signaling.chat.hub import Batch

log = logging.getLogger(__name__)

MAX_BUFFERED = 512 * 1024
MAX_QUEUED_FRAMES = 64  # inbound frames waiting to be handled on one data channel
TOO_SLOW = 4008  # our close code: the client fell too far behind
CLOSE_TIMEOUT = 5.0  # seconds a closing handshake may take before the socket is dropped


class WebSocketLink:
    """Writes each batch's shared, pre-encoded bytes straight to the socket in one write (the response
    must not compress, so every client gets identical bytes and aiohttp's writer holds no state we bypass)."""

    label = "websocket"

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport, max_buffered: int = MAX_BUFFERED) -> None:
        self._ws = ws
        self._transport = transport
        self._max_buffered = max_buffered
        self._closing: asyncio.Task[Any] | None = None

    def send(self, batch: Batch) -> bool:
        if self._closing is not None or self._ws.closed or self._transport.is_closing():
            return False
        if self._transport.get_write_buffer_size() > self._max_buffered:
            self._close(TOO_SLOW, "too far behind: reconnect and read the history")
            return False
        self._transport.write(batch.ws_bytes())
        return True

    def close(self, reason: str) -> None:
        self._close(1001 if "shutting down" in reason else 1008, reason)

    def _close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._say_goodbye(code, reason))

    async def _say_goodbye(self, code: int, reason: str) -> None:
        if code == TOO_SLOW:  # its buffer is full: a close frame would wait behind it for ever
            self._transport.abort()
            return
        try:
            await asyncio.wait_for(self._ws.close(code=code, message=reason[:120].encode()), CLOSE_TIMEOUT)
        except (TimeoutError, ConnectionError):
            self._transport.abort()

    async def frames(self) -> AsyncIterator[str | bytes]:
        """What the client sends, until it closes. Binary frames are accepted as UTF-8 JSON too."""
        async for message in self._ws:
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                yield message.data
            elif message.type == WSMsgType.ERROR:
                log.info("websocket closed with an error: %s", self._ws.exception())

    async def finish(self) -> None:
        """Wait for a close this link started (the handler owns it)."""
        if self._closing is not None:
            await asyncio.gather(self._closing, return_exceptions=True)


class DataChannelLink:
    """A data channel (aiortc's RTCDataChannel): one message per frame, a batch sent in the call with
    no task of its own."""

    label = "datachannel"

    def __init__(self, channel: Any, max_buffered: int = MAX_BUFFERED) -> None:
        self._channel = channel
        self._max_buffered = max_buffered
        self._inbound: asyncio.Queue[str | bytes | None] = asyncio.Queue(MAX_QUEUED_FRAMES)
        channel.on("message", self._on_message)
        channel.on("close", self._on_close)

    def _on_message(self, data: str | bytes) -> None:
        try:
            self._inbound.put_nowait(data)
        except asyncio.QueueFull:
            pass  # a flood: drop it here, the frame budget would refuse it anyway

    def _on_close(self) -> None:
        try:
            self._inbound.put_nowait(None)
        except asyncio.QueueFull:
            self._inbound.get_nowait()
            self._inbound.put_nowait(None)

    def send(self, batch: Batch) -> bool:
        if self._channel.readyState != "open":
            return False
        if self._channel.bufferedAmount > self._max_buffered:
            self.close("too far behind")
            return False
        send_texts(self._channel, batch.utf8())
        return True

    def close(self, reason: str) -> None:
        if self._channel.readyState in ("connecting", "open"):
            self._channel.close()
        self._on_close()

    async def frames(self) -> AsyncIterator[str | bytes]:
        while (frame := await self._inbound.get()) is not None:
            yield frame
