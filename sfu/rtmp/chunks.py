"""The RTMP chunk stream (RTMP 1.0, section 5.3): messages cut into chunks, interleaved on chunk streams.

`ChunkReader.feed` takes bytes as they arrive and returns the messages they complete. It keeps, per
chunk stream, what the compressed headers leave out (RTMP section 5.3.1.2):

- type 0: timestamp, length, message type and stream; the timestamp is absolute;
- type 1: a timestamp delta, length and type (the stream as before);
- type 2: a timestamp delta only;
- type 3: nothing: a continuation of the message being read, or a new message that repeats the last
  header and adds the last delta again (after a type 0, its timestamp is that delta, as the
  specification and FFmpeg have it);
- a 3-byte timestamp field of 0xFFFFFF means a 4-byte extended timestamp follows, and then it also
  follows every type 3 chunk of that chunk stream (continuations included) until a header without one.

Protocol control messages that change the reading (Set Chunk Size, Abort) act here and are returned
too. Input is bounded: a message's declared length, the chunk streams with half-read messages at
once, and the bytes they hold together; a breach is a `ChunkError` and the connection should close.
The reader copies each chunk's payload once, into its message's buffer.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

SET_CHUNK_SIZE, ABORT, ACKNOWLEDGEMENT, USER_CONTROL, WINDOW_ACK_SIZE, SET_PEER_BANDWIDTH = 1, 2, 3, 4, 5, 6
AUDIO, VIDEO, DATA_AMF3, COMMAND_AMF3, DATA_AMF0, COMMAND_AMF0, AGGREGATE = 8, 9, 15, 17, 18, 20, 22

DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 0x7FFFFFFF
EXTENDED = 0xFFFFFF

_U32 = struct.Struct(">I")
_U32_LE = struct.Struct("<I")


class ChunkError(ValueError):
    """The peer broke the chunk stream's rules (or our bounds): close the connection."""


@dataclass(slots=True)
class Message:
    type_id: int
    stream_id: int
    timestamp: int  # milliseconds, wrapping at 2**32
    payload: bytes


@dataclass(slots=True)
class _Stream:
    """What one chunk stream's headers carry over."""

    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False  # the last header had an extended timestamp: type 3 chunks carry one too
    partial: bytearray | None = None  # the message being read, when one is


class ChunkReader:
    def __init__(self, max_message: int = 16 * 1024 * 1024, max_partial_streams: int = 16,
                 max_buffered: int = 32 * 1024 * 1024) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._streams: dict[int, _Stream] = {}
        self._buffer = bytearray()
        self._max_message = max_message
        self._max_partial = max_partial_streams
        self._max_buffered = max_buffered
        self._buffered = 0  # bytes held in half-read messages
        self._widen: tuple[Callable[[Message], bool], int, int] | None = None
        self.received = 0  # bytes fed, for acknowledgements

    def widen_after(self, first: Callable[[Message], bool], max_message: int, max_buffered: int) -> None:
        """Once a message for which `first` is true is read, take messages up to `max_message` bytes and
        hold up to `max_buffered` in half-read ones (from the very next chunk, in the same read too)."""
        self._widen = (first, max_message, max_buffered)

    def feed(self, data: bytes) -> list[Message]:
        self.received += len(data)
        buffer = self._buffer
        buffer += data
        out: list[Message] = []
        offset = 0
        while True:
            used = self._chunk(buffer, offset, out)
            if not used:
                break
            offset += used
        if offset:
            del buffer[:offset]
        if len(buffer) > self._max_message + 32:  # what is left is less than one chunk: never this much
            raise ChunkError("a chunk larger than any message may be")
        return out

    def _chunk(self, buffer: bytearray, offset: int, out: list[Message]) -> int:
        """Read one chunk at `offset`; the bytes it took (0: it is not all here yet)."""
        available = len(buffer) - offset
        if available < 1:
            return 0
        first = buffer[offset]
        fmt, csid = first >> 6, first & 0x3F
        pos = offset + 1
        if csid == 0:
            if available < 2:
                return 0
            csid = 64 + buffer[pos]
            pos += 1
        elif csid == 1:
            if available < 3:
                return 0
            csid = 64 + buffer[pos] + (buffer[pos + 1] << 8)  # little-endian, as the specification says
            pos += 2
        header = (11, 7, 3, 0)[fmt]
        if len(buffer) < pos + header:
            return 0
        stream = self._streams.get(csid)
        if stream is None:
            if fmt != 0:
                raise ChunkError(f"chunk stream {csid} starts without a full header")
            stream = self._streams[csid] = _Stream()
        field_ts = 0
        if fmt <= 2:
            field_ts = (buffer[pos] << 16) | (buffer[pos + 1] << 8) | buffer[pos + 2]
        extended = field_ts == EXTENDED if fmt <= 2 else stream.extended
        end = pos + header + (4 if extended else 0)
        if len(buffer) < end:
            return 0
        if extended:
            field_ts = _U32.unpack_from(buffer, pos + header)[0]
        continuing = fmt == 3 and stream.partial is not None
        # What this header says, held apart until the whole chunk is here: a chunk read again once
        # more bytes come must not add its timestamp delta twice.
        length, type_id, stream_id = stream.length, stream.type_id, stream.stream_id
        timestamp, delta = stream.timestamp, stream.delta
        if not continuing:
            if stream.partial is not None:
                raise ChunkError(f"a new message on chunk stream {csid} before the last one ended")
            if fmt <= 1:
                length = (buffer[pos + 3] << 16) | (buffer[pos + 4] << 8) | buffer[pos + 5]
                type_id = buffer[pos + 6]
                if fmt == 0:
                    stream_id = _U32_LE.unpack_from(buffer, pos + 7)[0]
            if fmt == 0:
                timestamp = delta = field_ts
            elif fmt in (1, 2):
                delta = field_ts
                timestamp = (timestamp + field_ts) & 0xFFFFFFFF
            else:
                timestamp = (timestamp + delta) & 0xFFFFFFFF
            if length > self._max_message:
                raise ChunkError(f"a message of {length} bytes (at most {self._max_message})")
        take = min(self.chunk_size, length - (len(stream.partial) if stream.partial is not None else 0))
        if len(buffer) < end + take:
            return 0
        stream.length, stream.type_id, stream.stream_id = length, type_id, stream_id
        stream.timestamp, stream.delta = timestamp, delta
        if fmt <= 2:
            stream.extended = extended
        if stream.partial is None:
            if take == stream.length:  # the whole message in one chunk: no reassembly
                self._deliver(stream, bytes(buffer[end:end + take]), out)
                return end + take - offset
            if sum(1 for s in self._streams.values() if s.partial is not None) >= self._max_partial:
                raise ChunkError("too many messages half-read at once")
            stream.partial = bytearray()
        stream.partial += buffer[end:end + take]
        self._buffered += take
        if self._buffered > self._max_buffered:
            raise ChunkError("half-read messages hold too much")
        if len(stream.partial) >= stream.length:
            payload = bytes(stream.partial)
            self._buffered -= len(payload)
            stream.partial = None
            self._deliver(stream, payload, out)
        return end + take - offset

    def _deliver(self, stream: _Stream, payload: bytes, out: list[Message]) -> None:
        message = Message(stream.type_id, stream.stream_id, stream.timestamp, payload)
        if self._widen is not None and self._widen[0](message):
            _, self._max_message, self._max_buffered = self._widen
            self._widen = None
        if message.type_id == SET_CHUNK_SIZE and len(payload) >= 4:
            size = _U32.unpack_from(payload)[0] & 0x7FFFFFFF
            if size < 1:
                raise ChunkError("a chunk size of 0")
            self.chunk_size = size
        elif message.type_id == ABORT and len(payload) >= 4:
            aborted = self._streams.get(_U32.unpack_from(payload)[0])
            if aborted is not None and aborted.partial is not None:
                self._buffered -= len(aborted.partial)
                aborted.partial = None
        out.append(message)


class ChunkWriter:
    """Messages into chunks: a type 0 header, then type 3 continuations."""

    def __init__(self) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE

    def encode(self, csid: int, message: Message) -> bytes:
        if not 2 <= csid <= 65599:
            raise ValueError("chunk stream ids are 2 to 65599")
        basic0 = _basic(0, csid)
        basic3 = _basic(3, csid)
        timestamp = message.timestamp & 0xFFFFFFFF
        extended = timestamp >= EXTENDED
        payload = message.payload
        header = bytearray(basic0)
        header += (EXTENDED if extended else timestamp).to_bytes(3, "big")
        header += len(payload).to_bytes(3, "big")
        header.append(message.type_id)
        header += _U32_LE.pack(message.stream_id)
        if extended:
            header += _U32.pack(timestamp)
        out = bytearray(header)
        size = self.chunk_size
        out += payload[:size]
        for start in range(size, len(payload), size):
            out += basic3
            if extended:
                out += _U32.pack(timestamp)
            out += payload[start:start + size]
        return bytes(out)


def _basic(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes(((fmt << 6) | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    return bytes(((fmt << 6) | 1, (csid - 64) & 0xFF, (csid - 64) >> 8))
