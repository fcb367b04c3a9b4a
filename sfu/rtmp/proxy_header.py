"""The PROXY protocol header (versions 1 and 2, as HAProxy specifies them) that a TCP load balancer
sends ahead of an encoder's bytes: where the connection really comes from.

Behind a load balancer every encoder seems to come from the balancer's address, so the per-address
connection cap and the stream-key rate limits would count them all as one. Balancers that keep the
client's address say it in this header (nginx `proxy_protocol on`, HAProxy `send-proxy-v2`, cloud
network load balancers). It is believed only from the addresses in RTMP_PROXY_FROM, and from those it
is required: anyone else could claim any address with it.

A dozen lines of parsing, written here: the libraries on PyPI wrap whole servers, and the node's RTMP
server is an asyncio Protocol of its own.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107  # bytes, CRLF included (the specification's own bound)
V2_MAX_BODY = 512  # addresses and TLVs: more than any balancer sends ahead of a TCP stream


class ProxyHeaderError(Exception):
    """The bytes are not a PROXY header this server takes."""


@dataclass(frozen=True, slots=True)
class Source:
    """The client's address and port; host None: the balancer speaks for itself (LOCAL, UNKNOWN: a
    health check), so the connection's own address stands."""

    host: str | None
    port: int = 0


def parse(data: bytes) -> tuple[Source, int] | None:
    """(the source, how many bytes the header took) once `data` holds a whole header; None while more
    bytes are needed. ProxyHeaderError when `data` cannot begin one."""
    if data[:1] == b"P":
        return _v1(data)
    if data[:1] == b"\r":
        return _v2(data)
    if not data:
        return None
    raise ProxyHeaderError("the connection did not begin with a PROXY header")


def _text(given: bytes) -> str:
    try:
        return given.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("the PROXY header is not ASCII") from None


def _address(given: str | bytes, family: int) -> str:
    """The address in `given`: v1's text, or v2's 4 or 16 bytes."""
    try:
        found = ipaddress.ip_address(given)
    except ValueError:
        raise ProxyHeaderError("the PROXY header's source is not an address") from None
    if found.version != family or (isinstance(found, ipaddress.IPv6Address) and found.scope_id):
        raise ProxyHeaderError("the PROXY header's source is not of its family")
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        found = found.ipv4_mapped  # one encoder, one address, however the balancer spells it
    return str(found)


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ProxyHeaderError("the PROXY header's port is out of range")
    return value


def _v1(data: bytes) -> tuple[Source, int] | None:
    if data[:len(V1_PREFIX)] != V1_PREFIX[:len(data)]:
        raise ProxyHeaderError("the connection did not begin with a PROXY header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"a PROXY header is at most {V1_MAX} bytes")
        return None
    parts = data[:end].split(b" ")
    if parts[1:2] == [b"UNKNOWN"]:
        return Source(None), end + 2
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6") or not (parts[4].isdigit() and parts[5].isdigit()):
        raise ProxyHeaderError("a PROXY header names TCP4 or TCP6, two addresses and two ports")
    family = 4 if parts[1] == b"TCP4" else 6
    host = _address(_text(parts[2]), family)
    _address(_text(parts[3]), family)
    port = _port(int(parts[4]))
    _port(int(parts[5]))
    return Source(host, port), end + 2


def _v2(data: bytes) -> tuple[Source, int] | None:
    if data[:len(V2_SIGNATURE)] != V2_SIGNATURE[:len(data)]:
        raise ProxyHeaderError("the connection did not begin with a PROXY header")
    if len(data) < 16:
        return None
    version, command, family = data[12] >> 4, data[12] & 0x0F, data[13]
    length = int.from_bytes(data[14:16], "big")
    if version != 2 or command > 1:
        raise ProxyHeaderError("a PROXY header of version 2 is LOCAL or PROXY")
    if length > V2_MAX_BODY:
        raise ProxyHeaderError(f"a PROXY header's addresses and extensions take at most {V2_MAX_BODY} bytes here")
    if len(data) < 16 + length:
        return None
    body, used = data[16:16 + length], 16 + length
    if command == 0 or family == 0x00:  # LOCAL, or PROXY over an unspecified family
        return Source(None), used
    if family == 0x11 and length >= 12:  # TCP over IPv4
        return Source(_address(body[0:4], 4), _port(int.from_bytes(body[8:10], "big"))), used
    if family == 0x21 and length >= 36:  # TCP over IPv6
        return Source(_address(body[0:16], 6), _port(int.from_bytes(body[32:34], "big"))), used
    if family in (0x12, 0x22, 0x31, 0x32):  # UDP or UNIX: the specification falls back to the connection's own
        return Source(None), used
    raise ProxyHeaderError("a PROXY header's addresses are too short for their family, or of no family known")
