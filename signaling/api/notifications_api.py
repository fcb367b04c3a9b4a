"""A user's notifications (the bell) and how they want to be told; a channel's webhooks."""

from __future__ import annotations

import html

from aiohttp import web

from signaling.api.endpoint import ANYONE, MAX_ID, SIGNED_IN, Access, Call, Endpoint, id_param, int_query, json_response, name_param
from signaling.api.schemas import (
    NotificationListOut, NotificationOut, NotificationSettingsIn, NotificationSettingsOut, PushEndpointIn, PushKeyOut,
    PushSubscribedOut, PushSubscriptionIn, ReadIn, UnreadOut, VerifySentOut, WebhookIn, WebhookListOut, WebhookOut,
)
from signaling.auth.roles import Role
from signaling.errors import AppError
from signaling.notifications.email import Email
from signaling.notifications.push import Push
from signaling.notifications.service import NotificationService, Preferences
from signaling.notifications.webhooks import Hook, Webhooks

OWNER = Access(Role.BROADCASTER, "the channel's owner, or an admin")


class NotificationsApi:
    def __init__(self, notifications: NotificationService, webhooks: Webhooks, push: Push, email: Email) -> None:
        self._notifications = notifications
        self._webhooks = webhooks
        self._push = push
        self._email = email

    async def send_verification(self, call: Call[None]) -> web.StreamResponse:
        await self._email.request_verification(call.user)
        return json_response(VerifySentOut(sent=True), status=202)

    async def verify(self, call: Call[None]) -> web.StreamResponse:
        """The link in the verification email: back to the notifications page, which says how it went."""
        try:
            await self._email.verify(call.request.query.get("token", ""))
        except AppError:
            raise web.HTTPSeeOther("/notifications?email=broken") from None
        raise web.HTTPSeeOther("/notifications?email=verified")

    async def stop_email_page(self, call: Call[None]) -> web.StreamResponse:
        """A person (or a link scanner) opened the link: a button, so nothing changes until it is pressed."""
        token = call.request.query.get("token", "")
        self._email.links.open(token, "stop")  # a broken link is a 400 here already
        return web.Response(text=UNSUBSCRIBE_PAGE.format(token=html.escape(token, quote=True)), content_type="text/html")

    async def stop_email(self, call: Call[None]) -> web.StreamResponse:
        """RFC 8058 one-click: a mail client POSTs `List-Unsubscribe=One-Click`; the form above does too."""
        await self._email.unsubscribe(call.request.query.get("token", ""))
        return web.Response(text=UNSUBSCRIBED_PAGE, content_type="text/html")

    async def public_key(self, call: Call[None]) -> web.StreamResponse:
        return json_response(PushKeyOut(public_key=await self._push.key.public_key()),
                             headers={"Cache-Control": "public, max-age=3600"})

    async def subscribe(self, call: Call[PushSubscriptionIn]) -> web.StreamResponse:
        b = call.body
        new = await self._push.subscribe(call.user, b.endpoint, b.keys.p256dh, b.keys.auth)
        return json_response(PushSubscribedOut(subscribed=True, devices=await self._push.count(call.user)),
                             status=201 if new else 200)

    async def unsubscribe(self, call: Call[PushEndpointIn]) -> web.StreamResponse:
        await self._push.unsubscribe(call.user, call.body.endpoint)
        return json_response(PushSubscribedOut(subscribed=False, devices=await self._push.count(call.user)))

    async def listing(self, call: Call[None]) -> web.StreamResponse:
        before = int_query(call.request, "before", 0, 1, MAX_ID) or None
        items, unread, older = await self._notifications.listing(call.user, before, int_query(call.request, "limit", 20, 1, 100))
        return json_response(NotificationListOut(
            items=[NotificationOut(id=i.id, kind=i.kind, channel=i.channel, title=i.title, body=i.body, url=i.url,  # type: ignore[arg-type]
                                   created_at=i.created_at, read=i.read) for i in items],
            unread=unread, next_before=older))

    async def read(self, call: Call[ReadIn]) -> web.StreamResponse:
        return json_response(UnreadOut(unread=await self._notifications.mark_read(call.user, call.body.ids)))

    async def preferences(self, call: Call[None]) -> web.StreamResponse:
        return json_response(self._preferences(await self._notifications.preferences(call.user)))

    async def change_preferences(self, call: Call[NotificationSettingsIn]) -> web.StreamResponse:
        b = call.body
        return json_response(self._preferences(await self._notifications.change_preferences(
            call.user, in_app=b.in_app, push=b.push, email=b.email)))

    def _preferences(self, p: Preferences) -> NotificationSettingsOut:
        return NotificationSettingsOut(in_app=p.in_app, push=p.push, email=p.email, email_verified=p.email_verified,
                                       email_available=self._email.available)

    async def webhooks(self, call: Call[None]) -> web.StreamResponse:
        hooks = await self._webhooks.of_channel(name_param(call.request, "name"), call.user)
        return json_response(WebhookListOut(items=[_hook(h) for h in hooks]))

    async def add_webhook(self, call: Call[WebhookIn]) -> web.StreamResponse:
        b = call.body
        hook = await self._webhooks.add(name_param(call.request, "name"), call.user, b.url, list(b.events), b.format)
        return json_response(_hook(hook), status=201)

    async def remove_webhook(self, call: Call[None]) -> web.StreamResponse:
        await self._webhooks.remove(name_param(call.request, "name"), id_param(call.request, "id", "webhook"), call.user)
        return web.Response(status=204)

    def endpoints(self) -> list[Endpoint]:
        hooks = "/api/channels/{name}/webhooks"
        token = (("token", "string", "the token in the email's link"),)
        return [
            Endpoint("POST", "/api/me/email/verify", self.send_verification,
                     "Send a link that verifies your email address (email notifications go only to verified ones)",
                     SIGNED_IN, "notifications", response=VerifySentOut, status=202, errors=(401, 404, 409)),
            Endpoint("GET", "/api/email/verify", self.verify, "The verification link: verifies, then back to the site",
                     ANYONE, "notifications", status=303, query=token),
            Endpoint("GET", "/api/email/unsubscribe", self.stop_email_page,
                     "An email's unsubscribe link, opened: a page with the button (nothing changes yet)", ANYONE,
                     "notifications", errors=(400,), query=token, extra={"produces": "text/html"}),
            Endpoint("POST", "/api/email/unsubscribe", self.stop_email,
                     "One-click unsubscribe (RFC 8058): no more notification emails for the link's account", ANYONE,
                     "notifications", errors=(400,), query=token, raw_body="application/x-www-form-urlencoded",
                     extra={"produces": "text/html"}),
            Endpoint("GET", "/api/push/public-key", self.public_key, "The VAPID key browsers subscribe to push with",
                     ANYONE, "notifications", response=PushKeyOut),
            Endpoint("POST", "/api/me/push-subscriptions", self.subscribe,
                     "Receive browser push on this browser (its PushSubscription's JSON)", SIGNED_IN, "notifications",
                     body=PushSubscriptionIn, response=PushSubscribedOut, status=201, errors=(400, 401, 415, 422)),
            Endpoint("DELETE", "/api/me/push-subscriptions", self.unsubscribe, "Stop browser push on a browser",
                     SIGNED_IN, "notifications", body=PushEndpointIn, response=PushSubscribedOut,
                     errors=(400, 401, 415, 422)),
            Endpoint("GET", "/api/me/notifications", self.listing, "Your notifications, newest first, and how many are unread",
                     SIGNED_IN, "notifications", response=NotificationListOut, errors=(401, 422),
                     query=(("before", "integer", "next_before of the previous page"), ("limit", "integer", "1 to 100, default 20"))),
            Endpoint("POST", "/api/me/notifications/read", self.read, "Mark some (ids) or all of your notifications read",
                     SIGNED_IN, "notifications", body=ReadIn, response=UnreadOut, errors=(400, 401, 415, 422)),
            Endpoint("GET", "/api/me/notification-settings", self.preferences, "How you want to be told: in the app, by push, by email",
                     SIGNED_IN, "notifications", response=NotificationSettingsOut, errors=(401,)),
            Endpoint("PUT", "/api/me/notification-settings", self.change_preferences, "Change how you want to be told",
                     SIGNED_IN, "notifications", body=NotificationSettingsIn, response=NotificationSettingsOut,
                     errors=(400, 401, 415, 422)),
            Endpoint("GET", hooks, self.webhooks, "A channel's webhooks", OWNER, "notifications", response=WebhookListOut,
                     errors=(401, 403, 404)),
            Endpoint("POST", hooks, self.add_webhook,
                     "Add a webhook: its URL is told of the events chosen (signed with the secret in the answer)", OWNER,
                     "notifications", body=WebhookIn, response=WebhookOut, status=201, errors=(400, 401, 403, 404, 409, 415, 422)),
            Endpoint("DELETE", hooks + "/{id}", self.remove_webhook, "Delete a webhook", OWNER, "notifications", status=204,
                     errors=(401, 403, 404)),
        ]


def _hook(h: Hook) -> WebhookOut:
    return WebhookOut(id=h.id, url=h.url, events=h.events, format=h.format, created_at=h.created_at,
                      last_status=h.last_status, last_error=h.last_error, last_attempt_at=h.last_attempt_at, secret=h.secret)


UNSUBSCRIBE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Unsubscribe · Tallylight</title><link rel="stylesheet" href="/static/css/app.css"></head>
<body><main class="page"><h1>Stop notification emails?</h1>
<p>You will get no more go-live or reminder emails from Tallylight. The bell on the site and browser
notifications stay as they are.</p>
<form method="post" action="/api/email/unsubscribe?token={token}">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit" class="button">Unsubscribe</button></form>
<p><a href="/notifications">Choose what you hear about instead</a></p></main></body></html>
"""

UNSUBSCRIBED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Unsubscribed · Tallylight</title><link rel="stylesheet" href="/static/css/app.css"></head>
<body><main class="page"><h1>Unsubscribed</h1><p>You will get no more notification emails.
You can turn them on again on <a href="/notifications">your notifications page</a>.</p></main></body></html>
"""
