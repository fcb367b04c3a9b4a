"""Email: go-live and reminder emails to followers who asked for them, and address verification.

Sent through SMTP (`SMTP_URL`: `smtp://[user:password@]host[:port]`, `?starttls=true` to upgrade, or
`smtps://` for TLS from the start) with aiosmtplib, from `MAIL_FROM`. Only verified addresses get
notifications: a local account verifies by a signed link (`POST /api/me/email/verify` sends it);
an OpenID Connect account whose provider vouched for the address already is.

Every notification email can be stopped in one click without signing in (RFC 8058): it carries
`List-Unsubscribe: <…/api/email/unsubscribe?token=…>` and `List-Unsubscribe-Post:
List-Unsubscribe=One-Click`; a POST there (what mail clients send) turns email off for the account;
a GET (a person following the link, or a scanner) only shows a page with the button.
Links are HS256 JWTs signed with a key derived from the installation's JWT secret. SMTP_URL, or the
password in it, may be given sealed (`tally secrets seal`).
"""

from __future__ import annotations

import email.policy
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiosmtplib
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from signaling.auth.roles import Principal
from signaling.db.database import Database
from signaling.db.models import Follow, User
from signaling.errors import BadRequest, Conflict, NotFound
from signaling.notifications.outbox import Job, enqueue, waiting
from signaling.notifications.worker import GiveUp, Retry

log = logging.getLogger(__name__)

BATCH = 50  # recipients per email job (one SMTP connection each)
# Long header lines (List-Unsubscribe's signed URL) stay whole: folded, they would be RFC 2047 encoded,
# which mail clients do not read as a URL. RFC 5322 allows 998 characters a line.
POLICY = email.policy.default.clone(max_line_length=998)
WIRE = POLICY.clone(linesep="\r\n")
VERIFY_TTL = 2 * 24 * 3600  # seconds a verification link works
TIMEOUT = 20.0  # seconds for the SMTP conversation


@dataclass(frozen=True, slots=True)
class SmtpServer:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool  # TLS from the start (smtps)
    starttls: bool

    @classmethod
    def parse(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP_URL is smtp://[user:password@]host[:port][?starttls=true] or smtps://…")
        query = parse_qs(parts.query)
        tls = parts.scheme == "smtps"
        return cls(parts.hostname, parts.port or (465 if tls else 25), parts.username, parts.password, tls,
                   not tls and query.get("starttls", ["false"])[0].lower() in ("1", "true", "yes"))


class Links:
    """Signed links in emails: verify an address (expires), unsubscribe (does not)."""

    def __init__(self, secret: str, base_url: str, clock: Callable[[], float] = time.time) -> None:
        self._key = OctKey.import_key(("email-links:" + secret).encode())
        self._base = base_url
        self._clock = clock

    def verify_url(self, user_id: int, address: str) -> str:
        claims = {"u": user_id, "e": address, "p": "verify", "exp": int(self._clock()) + VERIFY_TTL}
        return f"{self._base}/api/email/verify?token={jwt.encode({'alg': 'HS256'}, claims, self._key)}"

    def unsubscribe_url(self, user_id: int) -> str:
        return f"{self._base}/api/email/unsubscribe?token={jwt.encode({'alg': 'HS256'}, {'u': user_id, 'p': 'stop'}, self._key)}"

    def open(self, token: str, purpose: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(token, self._key, algorithms=["HS256"]).claims
            if purpose == "verify":
                jwt.JWTClaimsRegistry(now=int(self._clock()), exp={"essential": True}).validate(claims)
        except (JoseError, ValueError) as exc:
            raise BadRequest("this link is broken or has expired") from exc
        if claims.get("p") != purpose or not isinstance(claims.get("u"), int):
            raise BadRequest("this link is broken or has expired")
        return dict(claims)


class Email:
    def __init__(self, db: Database, links: Links, smtp: SmtpServer | None, mail_from: str, base_url: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.links = links
        self._smtp = smtp
        self._from = mail_from
        self._base = base_url
        self._clock = clock
        self.sent = 0

    @property
    def available(self) -> bool:
        return self._smtp is not None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # --- verification ---

    async def request_verification(self, who: Principal) -> None:
        if self._smtp is None:
            raise Conflict("this site sends no email (its operator has not set SMTP_URL)")
        async with self._db.session() as session:
            user = await session.get(User, who.user_id)
            if user is None:
                raise NotFound("your account is gone")
            if user.email_verified:
                raise Conflict("your address is verified already")
            key = f"verify:{user.id}"
            if not await waiting(session, key):
                enqueue(session, "verify_email", {"user_id": user.id, "email": user.email}, self._now(), key)

    async def verify(self, token: str) -> str:
        """Mark the address in the link verified (if it is still the account's); the username."""
        claims = self.links.open(token, "verify")
        async with self._db.session() as session:
            user = await session.get(User, claims["u"])
            if user is None or user.email != claims.get("e"):
                raise BadRequest("this link is for an address the account no longer has")
            user.email_verified = True
            return user.username

    async def unsubscribe(self, token: str) -> None:
        claims = self.links.open(token, "stop")
        async with self._db.session() as session:
            user = await session.get(User, claims["u"])
            if user is not None:
                user.notify_email = False

    # --- sending (outbox jobs) ---

    async def deliver_verification(self, job: Job) -> None:
        async with self._db.session() as session:
            user = await session.get(User, int(job.payload["user_id"]))
            if user is None or user.email_verified or user.email != job.payload.get("email"):
                return
            message = self._message(user.email, "Verify your email address for Tallylight",
                                    f"Hello {user.display_name or user.username},\n\n"
                                    f"to get notifications by email, open this link (it works for two days):\n\n"
                                    f"{self.links.verify_url(user.id, user.email)}\n\n"
                                    "If you did not ask for this, ignore this email.\n")
        await self._send([message])

    async def deliver(self, job: Job) -> None:
        """An `email` job: the note to each of these users who still wants email at a verified address."""
        note = job.payload["note"]
        ids = [int(i) for i in job.payload.get("users", [])][:BATCH]
        async with self._db.session() as session:
            users = list(await session.scalars(select(User).where(
                User.id.in_(ids), User.notify_email.is_(True), User.email_verified.is_(True))))
        messages = []
        for user in users:
            stop = self.links.unsubscribe_url(user.id)
            watch = f"{self._base}{note['url']}"
            body = (f"{note['title']}\n\n{note['body']}\n\nWatch: {watch}\n\n"
                    f"You get this because you follow {note['channel']} on Tallylight and asked for email.\n"
                    f"Stop these emails: {stop}\n"
                    f"Choose what you hear about: {self._base}/notifications\n")
            message = self._message(user.email, note["title"] + (f": {note['body']}" if note["body"] else ""), body)
            message["List-Unsubscribe"] = f"<{stop}>"
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            messages.append(message)
        await self._send(messages)

    def _message(self, to: str, subject: str, text: str) -> EmailMessage:
        message = EmailMessage(policy=POLICY)
        message["From"] = self._from
        message["To"] = to
        message["Subject"] = " ".join(subject.split())[:200]  # no header injection through a title
        message["Date"] = format_datetime(self._now())
        message["Message-ID"] = make_msgid(domain=urlsplit(self._base).hostname or "tallylight")
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(text)
        return message

    async def _send(self, messages: list[EmailMessage]) -> None:
        server = self._smtp
        if server is None or not messages:
            return
        try:
            smtp = aiosmtplib.SMTP(hostname=server.host, port=server.port, use_tls=server.tls,
                                   start_tls=server.starttls, timeout=TIMEOUT, tls_context=ssl.create_default_context())
            async with smtp:
                if server.username:
                    await smtp.login(server.username, server.password or "")
                sender = parseaddr(self._from)[1]
                for message in messages:
                    try:
                        # Flattened here: aiosmtplib's own flattening folds long header lines at 78.
                        await smtp.sendmail(sender, [str(message["To"])], message.as_bytes(policy=WIRE))
                        self.sent += 1
                    except aiosmtplib.SMTPRecipientsRefused as exc:
                        log.info("the mail server refused %s: %s", message["To"], exc)
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise GiveUp(f"the mail server refused our login: {exc}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise Retry(f"the mail server: {exc}") from None


def email_jobs(session: AsyncSession, user_ids: list[int], note: dict[str, Any], now: datetime) -> None:
    """`email` jobs for these users (in the caller's transaction)."""
    for start in range(0, len(user_ids), BATCH):
        enqueue(session, "email", {"users": user_ids[start:start + BATCH], "note": note}, now)


def email_recipients(channel_id: int, bells: tuple[str, ...]) -> Any:
    """The followers of a channel (bell in `bells`) who take email at a verified address."""
    return (select(User.id).join(Follow, Follow.follower_id == User.id)
            .where(Follow.channel_id == channel_id, Follow.notify.in_(bells), User.notify_email.is_(True),
                   User.email_verified.is_(True)).order_by(User.id))

