"""Random and mutated datagrams of the four kinds an ICE socket receives (RFC 7983): STUN, DTLS, RTP
and RTCP; well-formed ones first, then broken in the ways parsers trip over (lengths that lie,
truncation, flipped bits, counts that overflow)."""

from __future__ import annotations

import random
import struct

from aioice import stun


def _mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    choice = rng.randrange(6)
    if choice == 0 and out:  # truncated anywhere
        return bytes(out[: rng.randrange(len(out))])
    if choice == 1:  # a few bits flipped
        for _ in range(rng.randrange(1, 8)):
            if out:
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if choice == 2 and len(out) > 4:  # a length or count field that lies
        at = rng.randrange(len(out) - 2)
        out[at : at + 2] = rng.choice([b"\xff\xff", b"\x00\x00", b"\x7f\xff", bytes([rng.randrange(256), rng.randrange(256)])])
        return bytes(out)
    if choice == 3:  # junk appended
        return bytes(out) + rng.randbytes(rng.randrange(1, 64))
    if choice == 4:  # huge
        return bytes(out) + rng.randbytes(rng.randrange(1200, 1600))
    return bytes(out)


def stun_datagram(rng: random.Random) -> bytes:
    message = stun.Message(stun.Method.BINDING, rng.choice(list(stun.Class)), transaction_id=rng.randbytes(12))
    if rng.random() < 0.7:
        message.attributes["USERNAME"] = rng.choice(["abcd:efgh", "x" * rng.randrange(1, 600), ""])
        message.attributes["PRIORITY"] = rng.randrange(1 << 32)
        if rng.random() < 0.5:
            message.attributes["ICE-CONTROLLING"] = rng.randrange(1 << 64)
        message.attributes["USE-CANDIDATE"] = None
        message.add_message_integrity(rng.randbytes(22))
        message.add_fingerprint()
    data = bytes(message)
    if rng.random() < 0.3:  # a hand-built attribute whose length runs past the end (struct.error in parsers)
        data = data[:20] + struct.pack("!HH", rng.choice([0x0001, 0x0006, 0x0008, 0x0020, 0x8028]), rng.randrange(1, 300))
        data = data[:2] + struct.pack("!H", len(data) - 20) + data[4:]
    return _mutate(data, rng) if rng.random() < 0.8 else data


def dtls_datagram(rng: random.Random) -> bytes:
    content = rng.choice([20, 21, 22, 23, 24, 25])
    body = rng.randbytes(rng.randrange(0, 200))
    if content == 22 and rng.random() < 0.5:  # a handshake message header (ClientHello, ...)
        body = bytes([rng.choice([1, 2, 11, 12, 14, 16, 20])]) + rng.randbytes(11) + body
    record = struct.pack("!BHHHIH", content, rng.choice([0xFEFD, 0xFEFF, 0x0303]), rng.randrange(3),
                         rng.randrange(1 << 16), rng.randrange(1 << 32), len(body)) + body
    return _mutate(record, rng) if rng.random() < 0.6 else record


def rtp_packet(rng: random.Random, payload_types: tuple[int, ...] = (96, 97, 102, 111), ssrcs: tuple[int, ...] = ()) -> bytes:
    csrcs = rng.choice([0, 0, 0, 1, 15])
    first = 0x80 | csrcs | (0x10 if rng.random() < 0.4 else 0) | (0x20 if rng.random() < 0.2 else 0)
    header = struct.pack("!BBHII", first, rng.choice(payload_types) | (0x80 if rng.random() < 0.3 else 0),
                         rng.randrange(1 << 16), rng.randrange(1 << 32),
                         rng.choice(ssrcs) if ssrcs and rng.random() < 0.7 else rng.randrange(1 << 32))
    header += rng.randbytes(4 * csrcs)
    if first & 0x10:
        words = rng.randrange(0, 4)
        header += struct.pack("!HH", rng.choice([0xBEDE, 0x1000, 0x1234]), words) + rng.randbytes(4 * words)
    payload = rng.randbytes(rng.randrange(0, 1400))
    if first & 0x20:
        payload += bytes([rng.randrange(256)])
    return header + payload


def rtcp_packet(rng: random.Random, media_ssrcs: tuple[int, ...] = (0,)) -> bytes:
    kind = rng.choice([200, 201, 202, 203, 205, 206, 207, 192])
    count = rng.randrange(32)
    body = struct.pack("!I", rng.randrange(1 << 32))
    if kind in (205, 206):  # feedback: NACK, PLI, FIR, REMB with a media SSRC we may know
        count = rng.choice([1, 4, 15, count])
        body += struct.pack("!I", rng.choice(media_ssrcs)) + rng.randbytes(4 * rng.randrange(0, 60))
    else:
        body += rng.randbytes(rng.randrange(0, 200))
    words = (len(body) + 3) // 4
    if rng.random() < 0.3:
        words = rng.randrange(1 << 16)  # a length that lies
    packet = struct.pack("!BBH", 0x80 | count, kind, words) + body
    return _mutate(packet, rng) if rng.random() < 0.5 else packet


def any_datagram(rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return stun_datagram(rng)
    if kind == 1:
        return dtls_datagram(rng)
    if kind == 2:
        return rtp_packet(rng)
    if kind == 3:
        return rtcp_packet(rng)
    return rng.randbytes(rng.randrange(0, 1500))
