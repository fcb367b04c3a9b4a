"""The notification pieces one process needs, built from settings: shared by the two composition
roots that run the worker (`tally serve` in the embedded mode, `tally worker`)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from bus import Bus
from signaling.auth.sealing import Sealer
from signaling.db.database import Database
from signaling.notifications.email import Email, Links, SmtpServer
from signaling.notifications.outbox import Outbox
from signaling.notifications.push import Push, VapidKey
from signaling.notifications.service import NotificationService, NotifyRules
from signaling.notifications.webhooks import Webhooks
from signaling.notifications.worker import Worker
from signaling.settings import Settings

log = logging.getLogger(__name__)

CAPS = {"live": 2, "reminder": 2, "ended": 2, "follow": 2, "webhook": 8, "push": 4, "email": 2, "verify_email": 2}  # jobs of each kind at once, per worker
PRUNE_EVERY = 600.0  # seconds between trims of each user's list to its newest notifications
TIDY_EVERY = 3600.0  # seconds between removals of jobs failed for good long ago


@dataclass(frozen=True, slots=True)
class NotificationParts:
    rules: NotifyRules
    service: NotificationService
    webhooks: Webhooks
    outbox: Outbox
    push: Push
    email: Email

    def worker(self, clock: Callable[[], float] = time.time, name: str = "") -> Worker:
        handlers = {"live": self.service.on_live, "reminder": self.service.on_reminder, "ended": self.service.on_ended,
                    "follow": self.service.on_follow, "webhook": self.webhooks.deliver, "push": self.push.deliver,
                    "email": self.email.deliver, "verify_email": self.email.deliver_verification}
        async def tidy() -> None:
            failed = await self.outbox.tidy(datetime.fromtimestamp(clock(), UTC))
            if failed:
                log.warning("%d notification jobs failed for good (kept a week in the outbox table)", failed)

        return Worker(self.outbox, handlers, CAPS, clock, name=name,
                      chores=((PRUNE_EVERY, self.service.prune), (TIDY_EVERY, tidy)))


def notification_parts(settings: Settings, db: Database, bus: Bus, secret: str, sealer: Sealer,
                       clock: Callable[[], float] = time.time) -> NotificationParts:
    """`secret`: the installation's JWT secret (email links are signed with a key made from it); `sealer`
    keeps the secrets of webhooks and push sealed, and opens SMTP_URL's password when given sealed."""
    rules = NotifyRules(settings.notify_settle, settings.notify_cooldown, settings.reminder_lead)
    base = settings.resolved_public_url
    outbox = Outbox(db)
    push = Push(db, VapidKey(db, sealer), sealer,
                settings.push_contact or f"mailto:admin@{urlsplit(base).hostname or 'localhost'}",
                settings.outbound_allow_private, clock)
    host = urlsplit(base).hostname or "localhost"
    email = Email(db, Links(secret, base, clock), smtp_server(settings.smtp_url, sealer),
                  settings.mail_from or f"Tallylight <noreply@{host}>", base, clock)
    return NotificationParts(rules, NotificationService(db, bus, base, rules, clock),
                             Webhooks(db, sealer, base, settings.outbound_allow_private, clock), outbox, push, email)


def smtp_server(url: str, sealer: Sealer) -> SmtpServer | None:
    """SMTP_URL's server (None: no email); the URL, or the password in it, may be given sealed."""
    if not url:
        return None
    server = SmtpServer.parse(sealer.open_setting(url, "SMTP_URL"))
    if server.password:
        server = dataclasses.replace(server, password=sealer.open_setting(server.password, "SMTP_URL's password"))
    return server
