"""Short-lived access tokens: JWTs signed with HS256 (joserfc, the Authlib project's JOSE library)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from signaling.errors import Unauthorized

ISSUER = "tallylight"


def load_or_create_secret(configured: str, data_dir: Path) -> str:
    """The configured key, or one generated once and kept under the data directory (embedded mode)."""
    if configured:
        return configured
    path = data_dir / "jwt-secret"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(value)
    return value


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: int
    session_id: str
    role: str


class AccessTokens:
    def __init__(self, secret: str, ttl: int, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 32:
            raise ValueError("the JWT secret must be at least 32 characters")
        self._key = OctKey.import_key(secret.encode())
        self.ttl = ttl
        self._clock = clock

    def issue(self, user_id: int, session_id: str, role: str) -> str:
        now = int(self._clock())
        claims = {
            "iss": ISSUER,
            "sub": str(user_id),
            "sid": session_id,
            "role": role,
            "iat": now,
            "exp": now + self.ttl,
            "jti": secrets.token_urlsafe(12),
        }
        return jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, self._key)

    def verify(self, token: str) -> AccessClaims:
        try:
            decoded = jwt.decode(token, self._key, algorithms=["HS256"])
            claims = decoded.claims
            jwt.JWTClaimsRegistry(
                now=int(self._clock()), iss={"essential": True, "value": ISSUER}, exp={"essential": True}
            ).validate(claims)
            return AccessClaims(user_id=int(claims["sub"]), session_id=str(claims["sid"]), role=str(claims["role"]))
        except (JoseError, KeyError, ValueError, TypeError) as exc:
            raise Unauthorized("the access token is invalid or expired") from exc
