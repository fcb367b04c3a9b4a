"""The address a request came from, for rate limits and per-client caps.

Behind a trusted proxy (`TRUST_FORWARDED_FOR`) it is the last entry of X-Forwarded-For: the one the
proxy added; entries before it are whatever the client wrote. An IPv6 client counts by its /64, the
block one subscriber is given: keyed on the full address, one host could take every place.
"""

from __future__ import annotations

import ipaddress

from aiohttp import web


def client_address(request: web.Request, trust_forwarded_for: bool) -> str:
    address = request.remote or "unknown"
    if trust_forwarded_for:
        hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
        if hops:
            address = hops[-1][:64]
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)
