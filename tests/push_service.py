"""A Web Push service stand-in on loopback, written from the RFCs, and a browser's side of a subscription.

- RFC 8030: a push is a POST to the subscription's endpoint with a TTL header (and Urgency, Topic);
  the service answers 201. Endpoints listed in `gone` answer 410, as for a browser that unsubscribed;
  statuses queued in `fail` are answered first.
- RFC 8292: the Authorization header is `vapid t=<JWT>, k=<public key>`; the JWT is ES256-signed with
  that key, its `aud` is this service's origin, `exp` is within 24 hours, `sub` a mailto: or https: URL.
- RFC 8291 / RFC 8188: the body is aes128gcm, encrypted to the subscription's P-256 key and auth secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


@dataclass
class Browser:
    """What a browser keeps for one subscription: its key pair and auth secret."""

    name: str
    private: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    @property
    def public(self) -> bytes:
        return self.private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def subscription(self, service_url: str) -> dict[str, Any]:
        """As PushSubscription.toJSON() gives it."""
        return {"endpoint": f"{service_url}/push/{self.name}", "expirationTime": None,
                "keys": {"p256dh": b64url(self.public), "auth": b64url(self.auth)}}

    def decrypt(self, body: bytes) -> bytes:
        """RFC 8291 section 3.4 and RFC 8188 section 2: one record, padding delimiter 0x02."""
        salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
        sender = body[21:21 + idlen]
        record = body[21 + idlen:]
        assert idlen == 65 and len(record) <= rs, (idlen, rs, len(record))
        shared = self.private.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender))
        prk_key = _hmac(self.auth, shared)
        ikm = _hmac(prk_key, b"WebPush: info\x00" + self.public + sender + b"\x01")
        prk = _hmac(salt, ikm)
        cek = _hmac(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
        nonce = _hmac(prk, b"Content-Encoding: nonce\x00\x01")[:12]
        padded = AESGCM(cek).decrypt(nonce, record, None)
        end = len(padded.rstrip(b"\x00")) - 1
        assert padded[end] == 2, "the last record ends with the 0x02 delimiter"
        return padded[:end]


@dataclass
class Received:
    browser: str
    payload: dict[str, Any]
    headers: Any  # CIMultiDict
    vapid_key: str


class PushService:
    def __init__(self, browsers: list[Browser]) -> None:
        self.browsers = {b.name: b for b in browsers}
        self.gone: set[str] = set()
        self.fail: dict[str, list[int]] = {}
        self.received: list[Received] = []
        self.refused: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/push/{name}", self._push)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def for_(self, name: str) -> list[dict[str, Any]]:
        return [r.payload for r in self.received if r.browser == name]

    async def _push(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        problem = self._check(request)
        if problem:
            self.refused.append(problem)
            return web.Response(status=403 if "vapid" in problem else 400, text=problem)
        queued = self.fail.get(name) or []
        if queued:
            return web.Response(status=queued.pop(0))
        if name in self.gone or name not in self.browsers:
            return web.Response(status=410)
        payload = json.loads(self.browsers[name].decrypt(await request.read()))
        key = request.headers["Authorization"].split("k=", 1)[1].strip()
        self.received.append(Received(name, payload, request.headers.copy(), key))  # case-insensitive
        return web.Response(status=201, headers={"Location": f"{self.url}/message/{len(self.received)}"})

    def _check(self, request: web.Request) -> str:
        if request.headers.get("Content-Encoding") != "aes128gcm":
            return "the body is not aes128gcm"
        if not request.headers.get("TTL", "").isdigit():
            return "no TTL (RFC 8030 section 5.2)"
        scheme, _, params = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "vapid":
            return "vapid: no vapid Authorization"
        fields = dict(part.strip().split("=", 1) for part in params.split(",") if "=" in part)
        token, key = fields.get("t", ""), fields.get("k", "")
        try:
            head, claims, signature = token.split(".")
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
            raw = unb64url(signature)
            der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
            public.verify(der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
        except (ValueError, InvalidSignature) as exc:
            return f"vapid: the JWT does not verify with k ({exc!r})"
        if json.loads(unb64url(head)).get("alg") != "ES256":
            return "vapid: the JWT is not ES256"
        body = json.loads(unb64url(claims))
        now = time.time()
        if body.get("aud") != self.url:
            return f"vapid: aud is {body.get('aud')!r}, not {self.url!r}"
        if not now < float(body.get("exp", 0)) <= now + 24 * 3600:
            return "vapid: exp is not within 24 hours"
        if not str(body.get("sub", "")).startswith(("mailto:", "https:")):
            return "vapid: sub is not a mailto: or https: URL"
        return ""
