"""HTTP to addresses users give us (webhooks, push services), kept out of the operator's network.

A URL whose host is a non-public IP address (loopback, private, link-local, unique-local, IPv4 mapped
into IPv6 …) is refused before any request; a name is checked as it resolves, at connection time, so a
name that resolves somewhere else later gains nothing. Redirects are not followed. Tests (and operators
who mean it) turn this off with OUTBOUND_ALLOW_PRIVATE.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

TIMEOUT = aiohttp.ClientTimeout(total=10, connect=5)


# IPv6 ranges that carry IPv4 addresses (or are deprecated) which Python's is_global calls public:
# NAT64 (RFC 6052, 8215), 6to4 (RFC 3056), IPv4-compatible (RFC 4291), site-local (RFC 3879).
TUNNELS = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "::/96", "fec0::/10"))


class PrivateAddress(OSError):
    """A name that resolves inside the operator's network."""


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif any(address in net for net in TUNNELS):
            return False
    return address.is_global and not address.is_multicast


def well_formed(url: str, schemes: tuple[str, ...]) -> bool:
    """Is `url` an absolute URL of these schemes, with a host and a valid port, no user or password, no
    whitespace or control characters, and one aiohttp will take as it is?"""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
        yarl.URL(url)
    except ValueError:
        return False
    return (parts.scheme in schemes and bool(parts.hostname) and not parts.username and not parts.password
            and not any(c.isspace() or ord(c) < 32 for c in url))


def inside(url: str) -> bool:
    """Is the URL's host plainly not public (a non-public IP address, or localhost)? Names that
    resolve inside are caught when connecting."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return True  # not a URL at all
    try:
        return not _public(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:  # the shorthand forms inet_aton reads (127.1, 2130706433, 0177.0.0.1) are addresses too
        return not _public(ipaddress.IPv4Address(socket.inet_aton(host)))
    except OSError:
        return host == "localhost" or host.endswith(".localhost")


class PublicResolver(AbstractResolver):
    """Resolves like aiohttp's default, and refuses names that lead inside the operator's network."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        for entry in found:
            if not _public(ipaddress.ip_address(entry["host"])):
                raise PrivateAddress(f"{host} resolves to {entry['host']}, which is not a public address")
        return found

    async def close(self) -> None:
        await self._inner.close()


def outbound_session(allow_private: bool, limit: int = 64) -> aiohttp.ClientSession:
    resolver = None if allow_private else PublicResolver()
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver, limit=limit, ttl_dns_cache=60),
                                 timeout=TIMEOUT)


def refused_inside(exc: BaseException) -> bool:
    """Was this client error a name resolving inside (not worth trying again)?"""
    return isinstance(getattr(exc, "os_error", None), PrivateAddress) or isinstance(exc, PrivateAddress)
