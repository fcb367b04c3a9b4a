"""Opaque secrets handed to clients (refresh tokens, stream keys): random, and stored only as hashes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

STREAM_KEY_PREFIX = "tlsk_"
REFRESH_TOKEN_PREFIX = "tlrt_"


@dataclass(frozen=True, slots=True)
class IssuedSecret:
    value: str
    digest: str
    hint: str


def digest(value: str) -> str:
    # A fast hash is right here: the values carry 256 bits of entropy, nothing to brute-force.
    return hashlib.sha256(value.encode()).hexdigest()


def issue(prefix: str) -> IssuedSecret:
    value = prefix + secrets.token_urlsafe(32)
    return IssuedSecret(value=value, digest=digest(value), hint=f"{prefix}…{value[-4:]}")
