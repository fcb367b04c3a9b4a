"""The ICE servers a client is told about, with short-lived TURN credentials.

TURN credentials follow the TURN REST API scheme that coturn calls `use-auth-secret`: the username is
`<expiry unix time>:<who>`, the password is base64(HMAC-SHA1(shared secret, username)). coturn checks
both when a relay is allocated, so nothing is stored and no call goes to the TURN server; a relay that
is running outlives its credential, and a new one (an ICE restart, a reconnect) asks for fresh ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from signaling.settings import IceServerSettings

WHO_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
MAX_WHO = 64
# Expiries are rounded up to this many seconds, so one client asking again gets the same username for
# a while, and coturn's per-user quota (user-quota) bounds what one client can hold.
EXPIRY_STEP = 300


@dataclass(frozen=True, slots=True)
class IceServer:
    """One entry of RTCConfiguration.iceServers."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def link_headers(self) -> list[str]:
        """RFC 9725 section 4.6: one `Link: rel="ice-server"` per URL, credentials as parameters."""
        tail = ""
        if self.username is not None and self.credential is not None:
            tail = f'; username="{self.username}"; credential="{self.credential}"; credential-type="password"'
        return [f'<{url}>; rel="ice-server"{tail}' for url in self.urls]


def turn_password(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class IceServers:
    """The operator's static STUN/TURN servers, and TURN servers given credentials per client."""

    def __init__(self, static: Sequence[IceServerSettings], turn_urls: Sequence[str], turn_secret: str,
                 ttl: int, clock: Callable[[], float] = time.time) -> None:
        self._static = tuple(IceServer((s.urls,), s.username, s.credential) for s in static)
        self._turn_urls = tuple(turn_urls)
        self._secret = turn_secret
        self.ttl = ttl
        self._clock = clock

    @property
    def issues_credentials(self) -> bool:
        return bool(self._turn_urls and self._secret)

    def static(self) -> tuple[IceServer, ...]:
        """What anyone may be told: no credential is made for it."""
        return self._static

    def issue(self, who: str) -> tuple[IceServer, ...]:
        """Every server, the TURN ones with a credential for `who` valid for `ttl` seconds or a little more."""
        if not self.issues_credentials:
            return self._static
        name = WHO_UNSAFE.sub("_", who)[:MAX_WHO] or "guest"
        expiry = -(-(int(self._clock()) + self.ttl) // EXPIRY_STEP) * EXPIRY_STEP
        username = f"{expiry}:{name}"
        return (*self._static, IceServer(self._turn_urls, username, turn_password(self._secret, username)))

    def guest(self, address: str) -> str:
        """Who a client that is not signed in is, to coturn: the same for one address, and no address in
        coturn's logs (a keyed hash of it)."""
        return "guest-" + hmac.new(self._secret.encode(), address.encode(), hashlib.sha256).hexdigest()[:12]
