"""One RTMP publisher's connection (RTMP 1.0): the handshake, the commands an encoder sends to publish,
and its audio, video and metadata handed on as FLV tag bodies.

The conversation OBS, FFmpeg and hardware encoders hold:

    C0 C1 → S0 S1 S2 → C2                       the simple handshake (no digest: publishers need none)
    connect(app, tcUrl, …)        → Window Acknowledgement Size, Set Peer Bandwidth, Set Chunk Size,
                                    _result NetConnection.Connect.Success
    releaseStream, FCPublish      → _result
    createStream                  → _result (stream 1)
    publish(key, "live")          → onStatus NetStream.Publish.Start, or
                                    onStatus NetStream.Publish.BadName with why (the encoder logs it)
    @setDataFrame onMetaData, audio, video …
    FCUnpublish, deleteStream     → the stream ends

`authorize(app, key)` decides a publish: it returns a `Publisher` (what the media goes to) or raises
`Refused` with words for the encoder's log. Acknowledgements are sent as the peer's window asks, pings
answered; a handshake must end in 10 s and a connection that sends nothing for 30 s is closed
(`Limits`, which also caps connections, in all and per address).
Unknown commands get an `_error` and the connection stays; a broken chunk stream closes it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sfu.rtmp import amf0
from sfu.rtmp.proxy_header import ProxyHeaderError, parse as parse_proxy_header
from sfu.rtmp.chunks import (ACKNOWLEDGEMENT, AUDIO, COMMAND_AMF0, COMMAND_AMF3, DATA_AMF0, SET_CHUNK_SIZE,
                             SET_PEER_BANDWIDTH, USER_CONTROL, VIDEO, WINDOW_ACK_SIZE, ChunkError, ChunkReader,
                             ChunkWriter, Message)

log = logging.getLogger(__name__)

HANDSHAKE = 1536
WINDOW = 2_500_000  # bytes between acknowledgements (what we ask of the peer, and send for it)
OUR_CHUNK_SIZE = 4096
PUBLISH_STREAM = 1
CONTROL_CSID, COMMAND_CSID = 2, 3


@dataclass(frozen=True, slots=True)
class Limits:
    handshake_timeout: float = 10.0  # seconds from connecting to a whole handshake (TLS's own included)
    idle_timeout: float = 30.0  # seconds without a byte from the encoder
    publish_timeout: float = 10.0  # seconds from the handshake to a publish (a place held by nobody publishing)
    max_connections: int = 64
    max_per_address: int = 8
    # A message (a frame) and all half-read ones of a connection: a 4K keyframe at 50 Mbit/s is under
    # 2 MB, and nothing is ever held for what an attacker only announces.
    max_message: int = 4 * 1024 * 1024
    max_buffered: int = 8 * 1024 * 1024
    # Until a connection asks to publish it sends only commands (a few hundred bytes each): 64 anonymous
    # connections then hold at most 64 × (64 + 128) KiB, not 64 × 8 MiB.
    max_message_before_publish: int = 64 * 1024
    max_buffered_before_publish: int = 128 * 1024
    # Load balancers whose PROXY header says who the encoder is (sfu.rtmp.proxy_header); plain RTMP only.
    proxy_from: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


PUBLISH_COMMAND = b"\x02\x00\x07publish"  # the AMF0 string "publish", a publish command's first value


class Refused(Exception):
    """The publish is refused; the text goes to the encoder's log."""


class Publisher(Protocol):
    """Where a publishing connection's media goes (FLV tag bodies, timestamps in milliseconds)."""

    def started(self, stop: Callable[[str], None]) -> None:
        """Publishing began; `stop(why)` tells the encoder why in its log and closes the connection."""

    def on_metadata(self, values: dict[str, Any]) -> None: ...

    def on_audio(self, timestamp: int, payload: bytes) -> None: ...

    def on_video(self, timestamp: int, payload: bytes) -> None: ...

    def end(self, reason: str, lost: bool = False) -> None:
        """The publishing is over; `lost`: the connection dropped without the encoder saying it stopped
        (it may come back)."""


# (app, stream key, the encoder's address) -> where its media goes, or Refused
Authorize = Callable[[str, str, str], Awaitable[Publisher]]


class RtmpConnection(asyncio.Protocol):
    def __init__(self, authorize: Authorize, limits: Limits = Limits(),
                 admit: Callable[[RtmpConnection], str | None] | None = None,
                 on_closed: Callable[[RtmpConnection], None] | None = None, proxied: bool = False) -> None:
        self._authorize = authorize
        self._proxied = proxied  # a listener where connections from `limits.proxy_from` open with a PROXY header
        self._proxy_header: bytearray | None = None  # being read: who the encoder is
        self._balancer = ""  # the address it comes through, when it does
        self._limits = limits
        self._admit = admit
        self._on_closed = on_closed
        self._transport: asyncio.Transport | None = None
        self._handshake = bytearray()
        self._answered = False  # S0 S1 S2 sent
        self._shaken = False
        self._reader = ChunkReader(max_message=limits.max_message_before_publish,
                                   max_buffered=limits.max_buffered_before_publish)
        # Frames may follow a publish command before it is answered (in the same read, even): room for them.
        self._reader.widen_after(_asks_to_publish, limits.max_message, limits.max_buffered)
        self._writer = ChunkWriter()
        self._acked = 0
        self._peer_window = 0  # the peer's Window Acknowledgement Size: ack it this often
        self.app = ""
        self.publisher: Publisher | None = None
        self.peer = ""
        self.address = ""  # the peer's host
        self._commands: asyncio.Queue[Message] = asyncio.Queue(maxsize=64)
        self._worker: asyncio.Task[None] | None = None
        self._last_data = time.monotonic()
        self._watch: asyncio.TimerHandle | None = None
        self._started = time.monotonic()
        self._shaken_at = 0.0
        self._publishing = False  # a publish came (it may still be being authorised)
        self.closed = False

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"
        self.address = str(peer[0]) if isinstance(peer, tuple) else "?"
        if self._proxied and _within(self.address, self._limits.proxy_from):
            # A load balancer: it says who the encoder is first. Until then the connection counts
            # against the server's cap but no address's (every encoder behind it shares this one).
            self._proxy_header, self._balancer, self.address = bytearray(), self.address, ""
        refusal = self._admit(self) if self._admit is not None else None
        if refusal is not None:
            log.info("rtmp %s: %s", self.peer, refusal)
            self.closed = True
            transport.close()
            return
        self._arm()
        if self._proxy_header is None:
            self._begin()

    def _begin(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run_commands(), name=f"rtmp-{self.peer}")

    def _proxy_header_received(self, data: bytes) -> None:
        assert self._proxy_header is not None
        self._proxy_header += data
        try:
            found = parse_proxy_header(bytes(self._proxy_header))
        except ProxyHeaderError as exc:
            # Said once per connection: a balancer without `proxy_protocol on` has every encoder closed here.
            log.warning("rtmp %s: %s; a load balancer in RTMP_PROXY_FROM must send one", self.peer, exc)
            self.close(str(exc))
            return
        if found is None:
            return
        source, used = found
        rest = bytes(self._proxy_header[used:])
        self._proxy_header = None
        balancer = self.peer
        if source.host is not None:
            self.address = source.host
            self.peer = f"[{source.host}]:{source.port}" if ":" in source.host else f"{source.host}:{source.port}"
        else:
            self.address = self._balancer
        refusal = self._admit(self) if self._admit is not None else None  # now by its own address too
        if refusal is not None:
            log.info("rtmp %s (through %s): %s", self.peer, balancer, refusal)
            self.close(refusal)
            return
        self._begin()
        if rest:
            self.data_received(rest)

    @property
    def received(self) -> int:
        """Bytes the peer sent (after its handshake)."""
        return self._reader.received

    def data_received(self, data: bytes) -> None:
        self._last_data = time.monotonic()
        if self._proxy_header is not None:
            self._proxy_header_received(data)
            return
        if not self._shaken:
            self._shake(data)
            return
        try:
            messages = self._reader.feed(data)
        except ChunkError as exc:
            self.close(f"broken chunk stream: {exc}")
            return
        for message in messages:
            self._message(message)
            if self.closed:
                return
        if self._peer_window and self._reader.received - self._acked >= self._peer_window:
            self._acked = self._reader.received
            self._send(CONTROL_CSID, Message(ACKNOWLEDGEMENT, 0, 0, struct.pack(">I", self._reader.received & 0xFFFFFFFF)))

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish("the encoder disconnected", lost=True)

    # --- the handshake ---

    def _shake(self, data: bytes) -> None:
        self._handshake += data
        if len(self._handshake) >= 1 and self._handshake[0] != 3:
            self.close(f"RTMP version {self._handshake[0]} (only 3; RTMPE is not supported)")
            return
        if self._transport is not None and len(self._handshake) >= 1 + HANDSHAKE and not self._answered:
            c1 = bytes(self._handshake[1:1 + HANDSHAKE])
            s1 = struct.pack(">II", 0, 0) + os.urandom(HANDSHAKE - 8)
            self._answered = True
            # S2 echoes C1 (with our time of reading it), as the simple handshake has it.
            self._transport.write(b"\x03" + s1 + c1[:4] + struct.pack(">I", 0) + c1[8:])
        if len(self._handshake) >= 1 + 2 * HANDSHAKE:
            rest = bytes(self._handshake[1 + 2 * HANDSHAKE:])
            self._handshake = bytearray()
            self._shaken = True
            self._shaken_at = time.monotonic()
            if rest:
                self.data_received(rest)

    # --- messages ---

    def _message(self, message: Message) -> None:
        kind = message.type_id
        if kind in (AUDIO, VIDEO):
            publisher = self.publisher
            if publisher is not None and message.payload:
                (publisher.on_audio if kind == AUDIO else publisher.on_video)(message.timestamp, message.payload)
        elif kind == DATA_AMF0:
            self._data(message.payload)
        elif kind in (COMMAND_AMF0, COMMAND_AMF3):
            payload = message.payload[1:] if kind == COMMAND_AMF3 else message.payload  # AMF3 commands open with 0
            try:
                self._commands.put_nowait(Message(kind, message.stream_id, message.timestamp, payload))
            except asyncio.QueueFull:
                self.close("too many commands at once")
        elif kind == WINDOW_ACK_SIZE and len(message.payload) >= 4:
            self._peer_window = struct.unpack_from(">I", message.payload)[0]
        elif kind == USER_CONTROL and len(message.payload) >= 6:
            event = struct.unpack_from(">H", message.payload)[0]
            if event == 6:  # ping request: answer with the same time
                self._send(CONTROL_CSID, Message(USER_CONTROL, 0, 0, struct.pack(">H", 7) + message.payload[2:6]))
        # Set Chunk Size and Abort acted in the reader; Acknowledgement, Set Peer Bandwidth and the
        # rest need nothing from a server that only receives.

    def _data(self, payload: bytes) -> None:
        try:
            values = amf0.decode_all(payload)
        except amf0.AmfError as exc:
            log.info("rtmp %s: unreadable data message: %s", self.peer, exc)
            return
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict) and self.publisher is not None:
            self.publisher.on_metadata(values[1])

    async def _run_commands(self) -> None:
        while True:
            message = await self._commands.get()
            try:
                values = amf0.decode_all(message.payload)
            except amf0.AmfError as exc:
                self.close(f"an unreadable command: {exc}")
                return
            if not values or not isinstance(values[0], str):
                continue
            name, transaction = values[0], values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
            args = values[2:]
            try:
                await self._command(name, transaction, args, message.stream_id)
            except Exception:  # noqa: BLE001 - one command's failure is this connection's, never the node's
                log.exception("rtmp %s: the command %s failed", self.peer, name)
                self.close("the server failed")
                return

    async def _command(self, name: str, transaction: float, args: list[Any], stream_id: int) -> None:
        if name == "connect":
            info = args[0] if args and isinstance(args[0], dict) else {}
            self.app = str(info.get("app", "")).strip("/")
            self._send(CONTROL_CSID, Message(WINDOW_ACK_SIZE, 0, 0, struct.pack(">I", WINDOW)))
            self._send(CONTROL_CSID, Message(SET_PEER_BANDWIDTH, 0, 0, struct.pack(">IB", WINDOW, 2)))
            self._send(CONTROL_CSID, Message(SET_CHUNK_SIZE, 0, 0, struct.pack(">I", OUR_CHUNK_SIZE)))
            self._writer.chunk_size = OUR_CHUNK_SIZE
            self._reply(0, "_result", transaction, {"fmsVer": "FMS/3,0,1,123", "capabilities": 31},
                        {"level": "status", "code": "NetConnection.Connect.Success", "description": "Connection succeeded.",
                         "objectEncoding": 0})
        elif name in ("releaseStream", "FCPublish", "FCUnpublish"):
            self._reply(0, "_result", transaction, None, None)
            if name == "FCUnpublish":
                self._finish("the encoder stopped the stream")
        elif name == "createStream":
            self._reply(0, "_result", transaction, None, float(PUBLISH_STREAM))
        elif name == "publish":
            key = str(args[1]) if len(args) > 1 and isinstance(args[1], str) else ""
            await self._publish(key, stream_id or PUBLISH_STREAM)
        elif name in ("deleteStream", "closeStream"):
            self._finish("the encoder stopped the stream")
        elif name in ("_checkbw", "getStreamLength", "_result", "_error", "onBWDone", "@setDataFrame"):
            pass
        else:
            self._reply(0, "_error", transaction, None, {"level": "error", "code": "NetConnection.Call.Failed",
                                                         "description": f"unknown command {name[:64]}"})

    async def _publish(self, key: str, stream_id: int) -> None:
        self._publishing = True
        if self.publisher is not None:
            self._status(stream_id, "error", "NetStream.Publish.BadName", "this connection publishes already")
            return
        try:
            self.publisher = await self._authorize(self.app, key, self.address)
        except Refused as refused:
            self._status(stream_id, "error", "NetStream.Publish.BadName", str(refused))
            log.info("rtmp %s: publish refused: %s", self.peer, refused)
            loop = asyncio.get_running_loop()
            loop.call_later(0.5, self.close, f"refused: {refused}")  # time for the encoder to read why
            return
        self._send(CONTROL_CSID, Message(USER_CONTROL, 0, 0, struct.pack(">HI", 0, stream_id)))  # Stream Begin
        self._status(stream_id, "status", "NetStream.Publish.Start", f"{key[:8]}… is now published.")
        self.publisher.started(lambda why: self._stop(stream_id, why))

    def _stop(self, stream_id: int, why: str) -> None:
        """The media side ends the publish: the encoder reads why, then the connection closes."""
        if self.closed:
            return
        self._status(stream_id, "error", "NetStream.Publish.Denied", why)
        self.publisher = None  # it knows already; no more media goes to it
        asyncio.get_running_loop().call_later(0.5, self.close, why)

    # --- sending ---

    def _send(self, csid: int, message: Message) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(self._writer.encode(csid, message))

    def _reply(self, stream_id: int, name: str, transaction: float, *values: Any) -> None:
        self._send(COMMAND_CSID, Message(COMMAND_AMF0, stream_id, 0, amf0.encode(name, transaction, *values)))

    def _status(self, stream_id: int, level: str, code: str, description: str) -> None:
        self._send(COMMAND_CSID + 2, Message(COMMAND_AMF0, stream_id, 0, amf0.encode(
            "onStatus", 0, None, {"level": level, "code": code, "description": description})))

    # --- ending ---

    def _arm(self) -> None:
        self._watch = asyncio.get_running_loop().call_later(1.0, self._check)

    def _check(self) -> None:
        now = time.monotonic()
        if not self._shaken and now - self._started > self._limits.handshake_timeout:
            self.close("no handshake in time")
        elif now - self._last_data > self._limits.idle_timeout:
            self.close(f"nothing from the encoder for {self._limits.idle_timeout:g} s")
        elif (self._shaken and self.publisher is None and not self._publishing
              and now - self._shaken_at > self._limits.publish_timeout):
            self.close(f"no publish within {self._limits.publish_timeout:g} s of connecting")
        elif not self.closed:
            self._arm()

    def close(self, reason: str) -> None:
        if self._transport is not None:
            self._transport.close()
        self._finish(reason)

    def _finish(self, reason: str, lost: bool = False) -> None:
        publisher, self.publisher = self.publisher, None
        if publisher is not None:
            publisher.end(reason, lost)
        if self.closed:
            return
        self.closed = True
        if self._watch is not None:
            self._watch.cancel()
        if self._worker is not None:
            self._worker.cancel()
        if self._on_closed is not None:
            self._on_closed(self)


class RtmpServer:
    """Listens for RTMP publishers (and RTMPS, with an `ssl` context); owns their connections."""

    def __init__(self, authorize: Authorize, limits: Limits = Limits()) -> None:
        self._authorize = authorize
        self._limits = limits
        self.connections: set[RtmpConnection] = set()
        self._servers: list[asyncio.base_events.Server] = []
        self.refused = 0  # connections turned away by the limits
        self._retired_bytes = 0  # received by connections that closed

    async def start(self, host: str, port: int, ssl: Any = None, reuse_port: bool = False) -> int:
        """Listen on `port` (0: any free one, returned); with an `ssl` context, for RTMPS; with
        `reuse_port`, beside other processes on the same port. Call it once per listener (RTMP and RTMPS
        share the connection limit)."""
        loop = asyncio.get_running_loop()
        proxied = ssl is None and bool(self._limits.proxy_from)  # (TLS is the balancer's to end, before it)
        server = await loop.create_server(lambda: self._connection(proxied), host, port, ssl=ssl,
                                          reuse_port=reuse_port or None,
                                          ssl_handshake_timeout=self._limits.handshake_timeout if ssl else None)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def _connection(self, proxied: bool) -> RtmpConnection:
        return RtmpConnection(self._authorize, self._limits, self._admit, self._closed, proxied)

    def _closed(self, connection: RtmpConnection) -> None:
        if connection in self.connections:
            self.connections.discard(connection)
            self._retired_bytes += connection.received

    @property
    def received_bytes(self) -> int:
        return self._retired_bytes + sum(c.received for c in self.connections)

    def _admit(self, connection: RtmpConnection) -> str | None:
        """Why `connection` is turned away, or None: it counts from now. Asked when it connects, and
        again when a load balancer's PROXY header has told its address (its address is "" until then)."""
        if connection not in self.connections and len(self.connections) >= self._limits.max_connections:
            self.refused += 1
            return "too many RTMP connections"
        if connection.address and sum(1 for c in self.connections if c.address == connection.address
                                      and c is not connection) >= self._limits.max_per_address:
            self.refused += 1
            return f"too many RTMP connections from {connection.address}"
        self.connections.add(connection)
        return None

    async def close(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for connection in list(self.connections):
            connection.close("the server is shutting down")
        for server in servers:
            await server.wait_closed()


def _within(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        found = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(found in network for network in networks)


def _asks_to_publish(message: Message) -> bool:
    if message.type_id == COMMAND_AMF0:
        return message.payload.startswith(PUBLISH_COMMAND)
    return message.type_id == COMMAND_AMF3 and message.payload[1:].startswith(PUBLISH_COMMAND)
