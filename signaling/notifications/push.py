"""Browser push: Web Push (RFC 8030) with encrypted payloads (RFC 8291, aes128gcm) and VAPID (RFC 8292),
through pywebpush (encryption, sent with aiohttp) and py-vapid (the key, the signed claims).

The installation has one VAPID key, made by the first process that needs it and kept in the database
(`site_secrets`), so every front door serves the same public key and every worker signs with it.
A user's browsers subscribe (`POST /api/me/push-subscriptions`, at most MAX_PER_USER: the oldest go);
a notification becomes `push` jobs of up to BATCH subscriptions each. A push service's 404 or 410
removes that subscription; a 429, 5xx or no answer leaves a job for the ones that failed, later.
A signed VAPID header is kept per push service origin for most of its lifetime (one signature for
every push to that service, not one per push). The VAPID private key and each subscription's auth
secret are kept sealed (`signaling.auth.sealing`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid02
from pywebpush import WebPusher
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from signaling.auth.roles import Principal
from signaling.auth.sealing import Sealer, SecretsKeysError
from signaling.db.database import Database, insert_new
from signaling.db.models import PushSubscription, SiteSecret
from signaling.errors import Invalid, Unavailable
from signaling.notifications.outbound import inside, outbound_session, refused_inside, well_formed
from signaling.notifications.outbox import Job, backoff, enqueue
from signaling.notifications.worker import Retry

log = logging.getLogger(__name__)

KEY_NAME = "vapid-private-pem"
MAX_PER_USER = 10  # browsers one user may have subscribed; a new one beyond replaces the oldest
BATCH = 100  # subscriptions per push job
AT_ONCE = 32  # pushes in flight per job
MAX_ROUNDS = 5  # tries per subscription before it is left out
CLAIMS_FOR = 12 * 3600  # seconds a signed VAPID header is valid (RFC 8292 allows up to 24 h)
RESIGN_BEFORE = 3600  # seconds before its expiry that a new one is signed
TIMEOUT = aiohttp.ClientTimeout(total=10, connect=5)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Note:
    """What a push says: the service worker shows `title` and `body`, and a click opens `url`."""

    title: str
    body: str
    url: str
    tag: str  # a newer push with the same tag replaces the older one on the screen
    urgency: str  # RFC 8030: very-low, low, normal, high
    ttl: int  # seconds the push service keeps it for a browser that is offline


class VapidKey:
    """The installation's VAPID key, loaded (or made) once per process."""

    def __init__(self, db: Database, sealer: Sealer) -> None:
        self._db = db
        self._sealer = sealer
        self._vapid: Vapid02 | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Vapid02:
        if self._vapid is None:
            async with self._lock:
                if self._vapid is None:
                    self._vapid = Vapid02.from_pem((await self._load()).encode())
        return self._vapid

    async def public_key(self) -> str:
        vapid = await self.get()
        return b64url(vapid.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))

    async def _load(self) -> str:
        async with self._db.session() as session:
            found = await session.get(SiteSecret, KEY_NAME)
            if found is not None:
                return self._open(found.value)
        fresh = Vapid02()
        fresh.generate_keys()
        pem = fresh.private_pem().decode()
        try:
            async with self._db.session() as session:
                session.add(SiteSecret(name=KEY_NAME, value=self._sealer.seal(pem)))
        except IntegrityError:
            pass  # another process made it first: theirs it is
        async with self._db.session() as session:
            row = await session.get(SiteSecret, KEY_NAME)
            assert row is not None
            return self._open(row.value)

    def _open(self, stored: str) -> str:
        try:
            return self._sealer.open(stored, "the VAPID key")
        except SecretsKeysError as exc:  # (start-up checks the keys: this is a key dropped before its rotation)
            log.error("%s", exc)
            raise Unavailable("browser push is unavailable: this server cannot open its key", retry_after=300) from None


class Push:
    def __init__(self, db: Database, key: VapidKey, sealer: Sealer, contact: str, allow_private: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.key = key
        self._sealer = sealer
        self._contact = contact  # the `sub` claim: how a push service reaches the operator
        self._allow_private = allow_private
        self._clock = clock
        self._http: aiohttp.ClientSession | None = None
        self._signed: dict[str, tuple[float, dict[str, str]]] = {}  # push service origin -> (expiry, headers)
        self.sent = 0
        self.gone = 0

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # --- a user's browsers ---

    async def subscribe(self, user: Principal, endpoint: str, p256dh: str, auth: str) -> bool:
        """Keep the subscription (True when it is new; one seen before moves to this user)."""
        endpoint = self._check_endpoint(endpoint)
        _check_keys(p256dh, auth)
        now = self._now()
        auth = self._sealer.seal(auth)
        async with self._db.session() as session:
            found = await session.scalar(select(PushSubscription).where(PushSubscription.endpoint == endpoint))
            if found is not None:
                found.user_id, found.p256dh, found.auth = user.user_id, p256dh, auth
                return False
            mine = list(await session.scalars(select(PushSubscription.id).where(PushSubscription.user_id == user.user_id)
                                              .order_by(PushSubscription.id.desc())))
            if len(mine) >= MAX_PER_USER:
                await session.execute(delete(PushSubscription).where(PushSubscription.id.in_(mine[MAX_PER_USER - 1:])))
            # (not added: the same browser, twice at once)
            return await insert_new(session, PushSubscription, {"user_id": user.user_id, "endpoint": endpoint,
                                                                "p256dh": p256dh, "auth": auth, "created_at": now})

    async def unsubscribe(self, user: Principal, endpoint: str) -> None:
        async with self._db.session() as session:
            await session.execute(delete(PushSubscription).where(PushSubscription.user_id == user.user_id,
                                                                 PushSubscription.endpoint == endpoint))

    async def count(self, user: Principal) -> int:
        async with self._db.session() as session:
            return int(await session.scalar(select(func.count()).select_from(PushSubscription).where(
                PushSubscription.user_id == user.user_id)) or 0)

    def _check_endpoint(self, endpoint: str) -> str:
        endpoint = endpoint.strip()
        schemes = ("https", "http") if self._allow_private else ("https",)
        if not well_formed(endpoint, schemes) or len(endpoint) > 1024:
            raise Invalid("a push endpoint is an https:// URL of a push service",
                          errors=[{"field": "endpoint", "message": "Use the endpoint your browser gave."}])
        if not self._allow_private and inside(endpoint):
            raise Invalid("a push endpoint may not point inside this service's network",
                          errors=[{"field": "endpoint", "message": "Use the endpoint your browser gave."}])
        return endpoint

    # --- sending ---

    async def deliver(self, job: Job) -> None:
        """A `push` job: send `note` to these subscriptions; the ones that failed for now get a job of
        their own, later."""
        ids = [int(i) for i in job.payload.get("subscriptions", [])][:BATCH]
        note = Note(**job.payload["note"])
        rounds = int(job.payload.get("round", 0))
        try:
            await self.key.get()
        except Unavailable as exc:  # the VAPID key cannot be opened: said in the log; tried again later
            raise Retry(exc.detail) from None
        async with self._db.session() as session:
            subs = list(await session.scalars(select(PushSubscription).where(PushSubscription.id.in_(ids))))
        body = json.dumps({"title": note.title, "body": note.body, "url": note.url, "tag": note.tag},
                          separators=(",", ":")).encode()
        gate = asyncio.Semaphore(AT_ONCE)

        async def one(sub: PushSubscription) -> tuple[int, int]:
            async with gate:
                return sub.id, await self._send(sub, body, note)

        results = await asyncio.gather(*(one(s) for s in subs))
        ok = [i for i, status in results if status in (200, 201, 202, 204)]
        gone = [i for i, status in results if status in (404, 410)]
        again = [i for i, status in results if status == 0 or status in (408, 429) or status >= 500]
        now = self._now()
        async with self._db.session() as session:
            if ok:
                await session.execute(update(PushSubscription).where(PushSubscription.id.in_(ok)).values(last_success_at=now))
            if gone:
                await session.execute(delete(PushSubscription).where(PushSubscription.id.in_(gone)))
            if again and rounds + 1 < MAX_ROUNDS:
                enqueue(session, "push", {"subscriptions": again, "note": job.payload["note"], "round": rounds + 1},
                        now + timedelta(seconds=backoff(rounds + 1)))
        self.sent += len(ok)
        self.gone += len(gone)

    async def _send(self, sub: PushSubscription, body: bytes, note: Note) -> int:
        """The push service's status, or 0 when it did not answer."""
        if not self._allow_private and inside(sub.endpoint):
            return 410  # (stored before the rule, or by hand): drop it
        try:
            auth = self._sealer.open(sub.auth, f"push subscription {sub.id}'s auth secret")
        except SecretsKeysError as exc:  # not dropped, never encrypted with garbage: later, once the keys are right
            log.error("%s", exc)
            return 0
        try:
            headers = {**await self._vapid_headers(sub.endpoint), "Urgency": note.urgency, "Topic": note.tag[:32]}
            pusher = WebPusher({"endpoint": sub.endpoint, "keys": {"p256dh": sub.p256dh, "auth": auth}},
                               aiohttp_session=self._session())
            response = await pusher.send_async(data=body, headers=headers, ttl=note.ttl, timeout=TIMEOUT)
            return int(getattr(response, "status", 0))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if refused_inside(exc):
                return 410  # it leads inside: drop it
            log.info("push to %s failed: %s", urlsplit(sub.endpoint).hostname, exc)
            return 0
        except Exception as exc:  # noqa: BLE001 - a malformed stored subscription: drop it, not the batch
            log.warning("push subscription %s cannot be used (%s): dropped", sub.id, exc)
            return 410

    async def _vapid_headers(self, endpoint: str) -> dict[str, str]:
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = time.time()  # the push service checks `exp` against real time, whatever clock the rest runs on
        cached = self._signed.get(audience)
        if cached is None or cached[0] - RESIGN_BEFORE < now:
            expiry = int(now) + CLAIMS_FOR
            vapid = await self.key.get()
            headers = vapid.sign({"aud": audience, "exp": expiry, "sub": self._contact})
            if len(self._signed) >= 1000:
                self._signed.clear()
            cached = self._signed[audience] = (expiry, headers)
        return dict(cached[1])

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = outbound_session(self._allow_private, limit=AT_ONCE * 2)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


def push_jobs(session: AsyncSession, subscription_ids: list[int], note: Note, now: datetime) -> int:
    """Leave `push` jobs for these subscriptions (in the caller's transaction); how many jobs."""
    payload: dict[str, Any] = {"title": note.title, "body": note.body, "url": note.url, "tag": note.tag,
                               "urgency": note.urgency, "ttl": note.ttl}
    for start in range(0, len(subscription_ids), BATCH):
        enqueue(session, "push", {"subscriptions": subscription_ids[start:start + BATCH], "note": payload}, now)
    return (len(subscription_ids) + BATCH - 1) // BATCH


def _check_keys(p256dh: str, auth: str) -> None:
    try:
        point = unb64url(p256dh)
        secret = unb64url(auth)
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except (ValueError, binascii.Error, TypeError):
        raise Invalid("the subscription's keys are not a P-256 public key and an auth secret",
                      errors=[{"field": "keys", "message": "Use the keys your browser gave."}]) from None
    if len(point) != 65 or len(secret) != 16:
        raise Invalid("the subscription's keys are not a P-256 public key and an auth secret",
                      errors=[{"field": "keys", "message": "Use the keys your browser gave."}])
