"""The RTMP chunk stream and AMF0, from byte fixtures built by hand from the specification (RTMP 1.0
section 5.3, AMF0): every header type, extended timestamps (on continuations too), a type 3 header
that starts a new message and adds the last delta again, 3-byte chunk stream ids, Set Chunk Size,
Abort, interleaving, any split of the input, and bounds that hostile input meets."""

from __future__ import annotations

import random
import struct

import pytest

from sfu.rtmp import amf0
from sfu.rtmp.chunks import (ABORT, AUDIO, COMMAND_AMF0, SET_CHUNK_SIZE, VIDEO, ChunkError, ChunkReader, ChunkWriter,
                             Message)


def header0(csid: int, ts: int, length: int, type_id: int, stream: int) -> bytes:
    field = min(ts, 0xFFFFFF)
    out = bytes((csid,)) + field.to_bytes(3, "big") + length.to_bytes(3, "big") + bytes((type_id,)) + struct.pack("<I", stream)
    return out + (struct.pack(">I", ts) if field == 0xFFFFFF else b"")


def test_header_types_carry_over_what_they_leave_out() -> None:
    reader = ChunkReader()
    data = (header0(4, 1000, 3, AUDIO, 1) + b"abc"
            + bytes((0x40 | 4,)) + (20).to_bytes(3, "big") + (2).to_bytes(3, "big") + bytes((AUDIO,)) + b"de"  # type 1
            + bytes((0x80 | 4,)) + (21).to_bytes(3, "big") + b"fg"  # type 2: same length and type
            + bytes((0xC0 | 4,)) + b"hi")  # type 3, a new message: the last delta (21) again
    expected = [(1000, b"abc", 1, AUDIO), (1020, b"de", 1, AUDIO), (1041, b"fg", 1, AUDIO), (1062, b"hi", 1, AUDIO)]
    got = reader.feed(data)
    assert [(m.timestamp, m.payload, m.stream_id, m.type_id) for m in got] == expected
    # The same bytes as TCP may hand them over, one at a time: a header read before its chunk is all
    # here is read again, and must not add its delta twice (FFmpeg's timestamps ran 60 % fast).
    reader = ChunkReader()
    got = [m for i in range(len(data)) for m in reader.feed(data[i:i + 1])]
    assert [(m.timestamp, m.payload, m.stream_id, m.type_id) for m in got] == expected


def test_a_type_3_after_a_type_0_adds_the_type_0_timestamp_as_its_delta() -> None:
    got = ChunkReader().feed(header0(5, 40, 1, VIDEO, 1) + b"x" + bytes((0xC0 | 5,)) + b"y")
    assert [m.timestamp for m in got] == [40, 80]


def test_extended_timestamps_also_follow_every_type_3_chunk_of_the_message() -> None:
    late = 0x01020304  # past 0xFFFFFF ms (4 h 40 min into a stream)
    payload = bytes(range(200))
    data = header0(6, late, len(payload), VIDEO, 1) + payload[:128] + bytes((0xC0 | 6,)) + struct.pack(">I", late) + payload[128:]
    got = ChunkReader().feed(data)
    assert len(got) == 1 and got[0].timestamp == late and got[0].payload == payload
    # The next message, type 3 as well, carries the extended field too and adds the delta.
    more = bytes((0xC0 | 6,)) + struct.pack(">I", late) + payload[:128] + bytes((0xC0 | 6,)) + struct.pack(">I", late) + payload[128:]
    reader = ChunkReader()
    reader.feed(data)
    assert [m.timestamp for m in reader.feed(more)] == [(late * 2) & 0xFFFFFFFF]


def test_two_and_three_byte_chunk_stream_ids() -> None:
    for csid, basic in ((64 + 200, bytes((0, 200))), (64 + 0x1234, bytes((1, 0x34, 0x12)))):  # little-endian
        data = basic + (7).to_bytes(3, "big") + (1).to_bytes(3, "big") + bytes((AUDIO,)) + struct.pack("<I", 1) + b"z"
        (message,) = ChunkReader().feed(data)
        assert message.payload == b"z" and message.timestamp == 7, csid
        assert ChunkWriter().encode(csid, Message(AUDIO, 1, 7, b"z")) == data


def test_set_chunk_size_and_abort_act_on_the_reading() -> None:
    reader = ChunkReader()
    big = bytes(300)
    got = reader.feed(header0(2, 0, 4, SET_CHUNK_SIZE, 0) + struct.pack(">I", 4096) + header0(6, 0, len(big), VIDEO, 1) + big)
    assert reader.chunk_size == 4096 and [m.type_id for m in got] == [SET_CHUNK_SIZE, VIDEO]
    reader = ChunkReader()
    reader.feed(header0(6, 0, 300, VIDEO, 1) + big[:128])  # half a message...
    got = reader.feed(header0(2, 0, 4, ABORT, 0) + struct.pack(">I", 6) + header0(6, 10, 2, VIDEO, 1) + b"ok")
    assert [m.payload for m in got] == [struct.pack(">I", 6), b"ok"]  # ...dropped; the next one reads


def test_interleaved_chunk_streams_and_any_split_of_the_input() -> None:
    rng = random.Random(20261205)
    writer = ChunkWriter()
    messages = [Message(VIDEO if i % 3 else AUDIO, 1, i * 33, rng.randbytes(rng.randrange(0, 5000))) for i in range(60)]
    for chunk_size in (1, 128, 4096, 70000):
        writer.chunk_size = chunk_size
        # Interleave two chunk streams message by message (chunks of one message stay together per
        # stream, as every encoder sends them).
        wire = b"".join(writer.encode(6 if m.type_id == VIDEO else 4, m) for m in messages)
        reader = ChunkReader()
        reader.chunk_size = chunk_size
        got: list[Message] = []
        offset = 0
        while offset < len(wire):
            step = rng.randrange(1, 3000)
            got += reader.feed(wire[offset:offset + step])
            offset += step
        assert [(m.type_id, m.timestamp, m.payload) for m in got] == [(m.type_id, m.timestamp, m.payload) for m in messages]


def test_hostile_input_meets_bounds() -> None:
    with pytest.raises(ChunkError, match="without a full header"):
        ChunkReader().feed(bytes((0xC0 | 9,)) + b"x")
    with pytest.raises(ChunkError, match="at most"):
        ChunkReader(max_message=1000).feed(header0(6, 0, 5000, VIDEO, 1))
    reader = ChunkReader(max_partial_streams=4)
    with pytest.raises(ChunkError, match="half-read"):
        for csid in range(3, 10):
            reader.feed(header0(csid, 0, 1000, VIDEO, 1) + bytes(128))
    reader = ChunkReader(max_buffered=10_000)
    with pytest.raises(ChunkError, match="hold too much"):
        reader.feed(header0(2, 0, 4, SET_CHUNK_SIZE, 0) + struct.pack(">I", 65536) + header0(6, 0, 1_000_000, VIDEO, 1)
                    + bytes(65536))
    with pytest.raises(ChunkError, match="chunk size of 0"):
        ChunkReader().feed(header0(2, 0, 4, SET_CHUNK_SIZE, 0) + struct.pack(">I", 0))


def test_amf0_reads_what_encoders_send() -> None:
    connect = amf0.encode("connect", 1, {"app": "live", "tcUrl": "rtmp://host/live", "flashVer": "FMLE/3.0",
                                         "fourCcList": ["av01", "hvc1"], "videoCodecs": 252.0, "café": True})
    assert amf0.decode_all(connect) == ["connect", 1.0, {"app": "live", "tcUrl": "rtmp://host/live", "flashVer": "FMLE/3.0",
                                                         "fourCcList": ["av01", "hvc1"], "videoCodecs": 252.0, "café": True}]
    # An ECMA array whose count is wrong (some encoders write 0), null, undefined, a date, a long string.
    ecma = bytes((amf0.ECMA_ARRAY,)) + struct.pack(">I", 0) + b"\x00\x05width" + amf0.encode(1280) + b"\x00\x00\x09"
    rest = bytes((amf0.NULL, amf0.UNDEFINED, amf0.DATE)) + struct.pack(">d", 5.0) + b"\x00\x00"
    long = bytes((amf0.LONG_STRING,)) + struct.pack(">I", 3) + b"abc"
    assert amf0.decode_all(amf0.encode("@setDataFrame", "onMetaData") + ecma + rest + long) == [
        "@setDataFrame", "onMetaData", {"width": 1280.0}, None, None, 5.0, "abc"]


@pytest.mark.parametrize("bad", [
    bytes((amf0.STRING,)) + struct.pack(">H", 10) + b"short",
    bytes((amf0.STRICT_ARRAY,)) + struct.pack(">I", 2**31),
    bytes((amf0.OBJECT,)) * 40 + b"\x00\x01a",
    bytes((amf0.AMF3, 0x01)),
    bytes((amf0.REFERENCE, 0, 0)),
    bytes((amf0.STRING,)) + struct.pack(">H", 2) + b"\xff\xfe",
    bytes((99,)),
])
def test_amf0_refuses_what_it_cannot_read(bad: bytes) -> None:
    with pytest.raises(amf0.AmfError):
        amf0.decode_all(bad)


def test_commands_survive_a_round_trip_through_chunks() -> None:
    writer = ChunkWriter()
    wire = writer.encode(3, Message(COMMAND_AMF0, 0, 0, amf0.encode("_result", 1, None, {"code": "NetConnection.Connect.Success"})))
    (message,) = ChunkReader().feed(wire)
    assert amf0.decode_all(message.payload)[3]["code"] == "NetConnection.Connect.Success"
