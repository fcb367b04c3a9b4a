"""Email with the real server, its worker and a real SMTP server (aiosmtpd) on loopback: a local
account verifies its address by the emailed link; a follower who asked for email gets the go-live
email with RFC 8058 one-click unsubscribe headers; a plain POST to that link (no session) stops them;
unverified addresses get nothing; broken links change nothing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiosmtpd.controller import Controller

from signaling.app import SERVICES
from support import Api, FakeClock, free_port
from test_notifications import is_live, outbox_empty
from test_whip_whep import go_live, stream_key, until


class Inbox:
    """aiosmtpd's handler: every message the server accepts."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [m for m in self.messages if m["To"] == address]


@pytest.fixture
def smtp() -> Iterator[tuple[str, Inbox]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", inbox
    finally:
        controller.stop()


@pytest.fixture
async def live(app_factory: Callable[..., web.Application], clock: FakeClock, smtp: tuple[str, Inbox]) -> AsyncIterator[Api]:
    app = app_factory(webrtc_host_addresses=["127.0.0.1"], publisher_timeout=1.5, smtp_url=smtp[0],
                      mail_from="Tallylight <live@tally.test>")
    async with TestClient(TestServer(app)) as client:
        yield Api(client, app[SERVICES], clock)


def link(message: Message, path: str) -> str:
    text = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    found = re.search(rf"https?://\S+{re.escape(path)}\?token=\S+", text)
    assert found, text
    return found.group(0)


async def test_verified_followers_get_the_go_live_email_and_stop_it_in_one_click(live: Api, smtp: tuple[str, Inbox]) -> None:
    _, inbox = smtp
    star, star_token = await live.user()
    fan, fan_token = await live.user()
    lazy, lazy_token = await live.user()  # asks for email, never verifies
    for token in (fan_token, lazy_token):
        assert (await live.call("PUT", f"/api/channels/{star}/follow", token=token))[0] == 200
        status, prefs, _ = await live.call("PUT", "/api/me/notification-settings", {"email": True}, token=token)
        assert status == 200 and prefs["email"] is True and prefs["email_verified"] is False and prefs["email_available"]
    fan_address = f"{fan}@example.com"

    # Verification: the link in the email verifies the address (and only the right link does).
    status, body, _ = await live.call("POST", "/api/me/email/verify", token=fan_token)
    assert status == 202 and body == {"sent": True}
    await until(lambda: _received(inbox, fan_address, 1))
    verify = link(inbox.to(fan_address)[0], "/api/email/verify")
    path = urlsplit(verify)
    broken = await live.client.get(f"{path.path}?{path.query[:-3]}xyz", allow_redirects=False)
    assert broken.status == 303 and broken.headers["Location"] == "/notifications?email=broken"
    assert (await live.call("GET", "/api/me/notification-settings", token=fan_token))[1]["email_verified"] is False
    done = await live.client.get(f"{path.path}?{path.query}", allow_redirects=False)
    assert done.status == 303 and done.headers["Location"] == "/notifications?email=verified"
    assert (await live.call("GET", "/api/me/notification-settings", token=fan_token))[1]["email_verified"] is True
    assert (await live.call("POST", "/api/me/email/verify", token=fan_token))[0] == 409

    # The go-live email: to the verified follower only.
    key = await stream_key(live, star_token)
    publisher, _ = await go_live(live, star, key)
    await until(lambda: is_live(live, star))
    live.clock.advance(31)
    await until(lambda: _received(inbox, fan_address, 2))
    await until(lambda: outbox_empty(live))
    await asyncio.sleep(0.2)
    assert inbox.to(f"{lazy}@example.com") == []
    email = inbox.to(fan_address)[1]
    assert email["From"] == "Tallylight <live@tally.test>" and f"{star} is live" in email["Subject"]
    assert f"/watch/{star}" in email.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    stop = email["List-Unsubscribe"].strip("<>")
    assert stop == link(email, "/api/email/unsubscribe")
    await publisher.close()

    # Opening the link changes nothing (scanners open links); the one-click POST, without a session, stops it.
    stop_path = urlsplit(stop)
    page = await live.client.get(f"{stop_path.path}?{stop_path.query}")
    assert page.status == 200 and "Unsubscribe" in await page.text()
    assert (await live.call("GET", "/api/me/notification-settings", token=fan_token))[1]["email"] is True
    tampered = await live.client.post(f"{stop_path.path}?{stop_path.query[:-3]}abc", data="List-Unsubscribe=One-Click",
                                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert tampered.status == 400
    one_click = await live.client.post(f"{stop_path.path}?{stop_path.query}", data="List-Unsubscribe=One-Click",
                                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert one_click.status == 200
    assert (await live.call("GET", "/api/me/notification-settings", token=fan_token))[1]["email"] is False
    assert (await live.call("GET", "/api/email/unsubscribe?token=nonsense"))[0] == 400


async def _received(inbox: Inbox, address: str, count: int) -> bool:
    return len(inbox.to(address)) >= count


async def test_without_smtp_there_is_no_email_to_verify(api: Api) -> None:
    _, token = await api.user()
    status, problem, _ = await api.call("POST", "/api/me/email/verify", token=token)
    assert status == 409 and "SMTP_URL" in problem["detail"]
    assert (await api.call("GET", "/api/me/notification-settings", token=token))[1]["email_available"] is False
