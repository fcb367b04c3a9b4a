"""Pick the bus implementation from its URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from bus.bus import Bus


SHARED_SCHEMES = ("redis", "rediss", "unix")


def is_shared(url: str) -> bool:
    """Does the bus at `url` reach other processes (Redis), or only this one (memory://)?"""
    return urlsplit(url).scheme in SHARED_SCHEMES


def open_bus(url: str) -> Bus:
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from bus.memory import MemoryBus

        return MemoryBus()
    if scheme in SHARED_SCHEMES:
        from bus.redis import RedisBus  # the Redis client is imported only when asked for

        return RedisBus(url)
    raise ValueError(f"unknown bus URL scheme {scheme!r}: use memory:// or redis://")
