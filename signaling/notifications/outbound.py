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
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

TIMEOUT = aiohttp.ClientTimeout(total=10, connect=5)


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def inside(url: str) -> bool:
    """Is the URL's host plainly not public (a non-public IP address, or localhost)? Names that
    resolve inside are caught when connecting."""
    host = urlsplit(url).hostname or ""
    try:
        return not _public(ipaddress.ip_address(host))
    except ValueError:
        return host == "localhost" or host.endswith(".localhost")


class PublicResolver(AbstractResolver):
    """Resolves like aiohttp's default, and refuses names that lead inside the operator's network."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        for entry in found:
            if not _public(ipaddress.ip_address(entry["host"])):
                raise OSError(f"{host} resolves to {entry['host']}, which is not a public address")
        return found

    async def close(self) -> None:
        await self._inner.close()


def outbound_session(allow_private: bool, limit: int = 64) -> aiohttp.ClientSession:
    resolver = None if allow_private else PublicResolver()
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver, limit=limit, ttl_dns_cache=60),
                                 timeout=TIMEOUT)
