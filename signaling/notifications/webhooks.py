"""Webhooks: a channel's owner names URLs to be told of go-live, stream-ended and new-follower events.

Each delivery is a POST of a JSON body (ours, or a Discord-compatible one), signed like this:
`X-Tallylight-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the hook's secret>`
(the time inside the signature lets a receiver refuse replays). A 2xx is done; a 408, 429, 5xx or no
answer is tried again with backoff (the outbox's); another 4xx is given up at once.

Hooks may not point inside the operator's network (see `outbound.py`). Secrets are kept sealed
(`signaling.auth.sealing`): the owner is shown the secret once, the database holds it sealed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from sqlalchemy import delete, func, select

from signaling.auth.roles import Principal
from signaling.auth.sealing import Sealer, SecretsKeysError
from signaling.channels.service import managed_channel
from signaling.db.database import Database
from signaling.db.models import Webhook
from signaling.errors import Conflict, Invalid, NotFound
from signaling.notifications.outbound import inside, outbound_session, refused_inside, well_formed
from signaling.notifications.outbox import Job
from signaling.notifications.worker import GiveUp, Retry

EVENTS = ("live", "ended", "follow")
FORMATS = ("json", "discord")
MAX_PER_CHANNEL = 5
USER_AGENT = "Tallylight-Webhooks/1"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Hook:
    id: int
    url: str
    events: list[str]
    format: str
    created_at: datetime
    last_status: int
    last_error: str
    last_attempt_at: datetime | None
    secret: str | None = None  # only in the answer that creates it


def sign(secret: str, at: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def body_for(fmt: str, payload: dict[str, Any], base_url: str) -> dict[str, Any]:
    """The POST body for an event (`payload` is the outbox job's)."""
    channel = str(payload.get("channel", ""))
    event = str(payload.get("event", ""))
    watch = f"{base_url}/watch/{quote(channel)}"
    if fmt == "discord":
        follower = _markdown_escaped(str(payload.get("follower", {}).get("display_name", "Someone")))
        text = {"live": f"**{channel}** is live: {watch}", "ended": f"**{channel}**'s stream ended.",
                "follow": f"**{follower}** followed **{channel}**."}
        # allowed_mentions: a title or name with "@everyone" pings nobody.
        return {"content": text.get(event, event), "username": "Tallylight", "allowed_mentions": {"parse": []}}
    body: dict[str, Any] = {"event": f"stream.{event}" if event in ("live", "ended") else "channel.follow",
                            "channel": {"name": channel, "url": watch}, "at": payload.get("at")}
    if "stream" in payload:
        body["stream"] = {"id": payload["stream"]}
    if "follower" in payload:
        body["follower"] = payload["follower"]
    return body


def _markdown_escaped(text: str) -> str:
    """A user's words in Discord markdown as plain text (no links, no formatting)."""
    return "".join("\\" + c if c in "\\*_~`|>[]()#-:<@!" else c for c in text)


def check_url(url: str) -> str:
    url = url.strip()
    if not well_formed(url, ("http", "https")):
        raise Invalid("a webhook URL is http(s)://host/path, without a user or password",
                      errors=[{"field": "url", "message": "Use an https:// address."}])
    if len(url) > 512:
        raise Invalid("a webhook URL is at most 512 characters", errors=[{"field": "url", "message": "Use a shorter address."}])
    return url


class Webhooks:
    def __init__(self, db: Database, sealer: Sealer, base_url: str, allow_private: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._sealer = sealer
        self._base = base_url
        self._allow_private = allow_private
        self._clock = clock
        self._http: aiohttp.ClientSession | None = None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # --- the owner's list ---

    async def of_channel(self, name: str, by: Principal) -> list[Hook]:
        async with self._db.session() as session:
            channel = await managed_channel(session, name, by, "see its webhooks")
            rows = await session.scalars(select(Webhook).where(Webhook.channel_id == channel.id).order_by(Webhook.id))
            return [_hook(row) for row in rows]

    async def add(self, name: str, by: Principal, url: str, events: list[str], fmt: str) -> Hook:
        url = check_url(url)
        if not self._allow_private and inside(url):
            raise Invalid("a webhook may not point at a private, loopback or link-local address",
                          errors=[{"field": "url", "message": "Use a public address."}])
        wanted = sorted(set(events))
        if not wanted or any(e not in EVENTS for e in wanted):
            raise Invalid(f"events are some of {', '.join(EVENTS)}",
                          errors=[{"field": "events", "message": "Pick at least one of: live, ended, follow."}])
        if fmt not in FORMATS:
            raise Invalid("format is json or discord", errors=[{"field": "format", "message": "Use json or discord."}])
        async with self._db.session() as session:
            channel = await managed_channel(session, name, by, "add webhooks")
            count = await session.scalar(select(func.count()).select_from(Webhook).where(Webhook.channel_id == channel.id))
            if (count or 0) >= MAX_PER_CHANNEL:
                raise Conflict(f"a channel has at most {MAX_PER_CHANNEL} webhooks: delete one first")
            secret = secrets.token_hex(24)
            row = Webhook(channel_id=channel.id, url=url, secret=self._sealer.seal(secret), events=wanted, format=fmt,
                          created_at=self._now(), last_status=0, last_error="")
            session.add(row)
            await session.flush()
            return _hook(row, secret)

    async def remove(self, name: str, hook_id: int, by: Principal) -> None:
        async with self._db.session() as session:
            channel = await managed_channel(session, name, by, "delete its webhooks")
            gone = await session.execute(delete(Webhook).where(Webhook.id == hook_id, Webhook.channel_id == channel.id))
            if not gone.rowcount:  # type: ignore[attr-defined]
                raise NotFound(f"there is no webhook {hook_id} on {name!r}")

    # --- delivery (an outbox job) ---

    async def deliver(self, job: Job) -> None:
        async with self._db.session() as session:
            hook = await session.get(Webhook, int(job.payload["webhook_id"]))
            if hook is None:
                return  # deleted meanwhile
            url, sealed, fmt = hook.url, hook.secret, hook.format
        if not self._allow_private and inside(url):
            raise GiveUp("the webhook points at a private address")
        try:
            secret = self._sealer.open(sealed, f"webhook {hook.id}'s secret")
        except SecretsKeysError as exc:  # never signed with garbage; tried again, in case the keys are put right
            log.error("%s", exc)
            raise Retry(str(exc)) from None
        body = json.dumps(body_for(fmt, job.payload, self._base), separators=(",", ":")).encode()
        at = int(self._clock())
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "X-Tallylight-Event": str(job.payload.get("event", "")), "X-Tallylight-Delivery": str(job.id),
                   "X-Tallylight-Signature": sign(secret, at, body)}
        status, error = 0, ""
        try:
            async with self._session().post(url, data=body, headers=headers, allow_redirects=False) as response:
                status = response.status
                await response.content.read(4096)  # the answer is not used; read a little so the connection is reused
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            error = str(exc) or type(exc).__name__
            if refused_inside(exc):
                await self._record(int(job.payload["webhook_id"]), 0, error)
                raise GiveUp(error) from None
        await self._record(int(job.payload["webhook_id"]), status, error or ("" if 200 <= status < 300 else f"HTTP {status}"))
        if 200 <= status < 300:
            return
        if status and status not in (408, 429) and status < 500:
            raise GiveUp(f"the receiver refused it: HTTP {status}")
        raise Retry(error or f"HTTP {status}")

    async def _record(self, hook_id: int, status: int, error: str) -> None:
        async with self._db.session() as session:
            hook = await session.get(Webhook, hook_id)
            if hook is not None:
                hook.last_status, hook.last_error, hook.last_attempt_at = status, error[:300], self._now()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = outbound_session(self._allow_private, limit=32)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


def _hook(row: Webhook, secret: str | None = None) -> Hook:
    return Hook(row.id, row.url, list(row.events or []), row.format, row.created_at, row.last_status, row.last_error,
                row.last_attempt_at, secret)
