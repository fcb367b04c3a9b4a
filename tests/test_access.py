"""Who may call what: every endpoint against anonymous and each role.

The table here is written independently of the endpoint declarations; the test fails when an endpoint
exists that the table does not name, so a new endpoint cannot ship without stating its audience.
"""

from __future__ import annotations

from typing import Any

import pytest

from support import Api

ROLES = ["viewer", "broadcaster", "moderator", "admin"]
ANYONE = {"anonymous", *ROLES}
SIGNED_IN = set(ROLES)
BROADCASTER_UP = {"broadcaster", "moderator", "admin"}
ADMIN = {"admin"}

# (method, route template) -> who may call it
TABLE: dict[tuple[str, str], set[str]] = {
    ("POST", "/api/auth/register"): ANYONE,
    ("POST", "/api/auth/login"): ANYONE,
    ("POST", "/api/auth/refresh"): ANYONE,
    ("POST", "/api/auth/logout"): ANYONE,
    ("GET", "/api/auth/providers"): ANYONE,
    ("GET", "/api/auth/oidc/{provider}/login"): ANYONE,
    ("GET", "/api/auth/oidc/{provider}/callback"): ANYONE,
    ("GET", "/api/me"): SIGNED_IN,
    ("PATCH", "/api/me"): SIGNED_IN,
    ("GET", "/api/me/stream-key"): BROADCASTER_UP,
    ("POST", "/api/me/stream-key"): BROADCASTER_UP,
    ("GET", "/api/me/following"): SIGNED_IN,
    ("GET", "/api/channels"): ANYONE,
    ("GET", "/api/channels/{name}"): ANYONE,
    ("PATCH", "/api/channels/{name}"): BROADCASTER_UP,  # and then only the owner, or an admin
    ("PUT", "/api/channels/{name}/follow"): SIGNED_IN,
    ("DELETE", "/api/channels/{name}/follow"): SIGNED_IN,
    ("GET", "/api/users"): ADMIN,
    ("PUT", "/api/users/{username}/role"): ADMIN,
    ("GET", "/api/cluster"): ADMIN,
    ("GET", "/healthz"): ANYONE,
    ("GET", "/readyz"): ANYONE,
    ("GET", "/metrics"): ANYONE,
    ("GET", "/api/openapi.json"): ANYONE,
    ("OPTIONS", "/whip/{channel}"): ANYONE,
    ("POST", "/whip/{channel}"): BROADCASTER_UP,  # the owner's token (or the channel's stream key)
    ("OPTIONS", "/whip/{channel}/{session}"): ANYONE,
    ("PATCH", "/whip/{channel}/{session}"): ANYONE,  # whoever holds the unguessable session URL
    ("DELETE", "/whip/{channel}/{session}"): ANYONE,
    ("OPTIONS", "/whep/{channel}"): ANYONE,
    ("POST", "/whep/{channel}"): ANYONE,
    ("OPTIONS", "/whep/{channel}/{session}"): ANYONE,
    ("PATCH", "/whep/{channel}/{session}"): ANYONE,
    ("DELETE", "/whep/{channel}/{session}"): ANYONE,
    ("OPTIONS", "/whep/{channel}/{session}/layers"): ANYONE,
    ("GET", "/whep/{channel}/{session}/layers"): ANYONE,  # the session URL is the credential
    ("PUT", "/whep/{channel}/{session}/layers"): ANYONE,
    ("GET", "/api/ice-servers"): ANYONE,  # TURN credentials are short-lived and rate-limited per address
    ("GET", "/ws"): ANYONE,
    ("GET", "/api/channels/{name}/chat"): ANYONE,
    # Moderation: signed in, and then the channel's owner, its moderators or a site moderator.
    ("DELETE", "/api/channels/{name}/chat/{id}"): SIGNED_IN,
    ("GET", "/api/channels/{name}/chat/settings"): ANYONE,
    ("GET", "/api/channels/{name}/chat/chatters"): ANYONE,
    ("PATCH", "/api/channels/{name}/chat/settings"): SIGNED_IN,
    ("GET", "/api/channels/{name}/chat/bans"): SIGNED_IN,
    ("PUT", "/api/channels/{name}/chat/bans/{username}"): SIGNED_IN,
    ("DELETE", "/api/channels/{name}/chat/bans/{username}"): SIGNED_IN,
    ("GET", "/api/channels/{name}/moderators"): ANYONE,
    ("PUT", "/api/channels/{name}/moderators/{username}"): SIGNED_IN,  # and then the owner, or an admin
    ("DELETE", "/api/channels/{name}/moderators/{username}"): SIGNED_IN,
    ("GET", "/api/channels/{name}/recordings"): ANYONE,
    ("PUT", "/api/channels/{name}/recording"): BROADCASTER_UP,  # and then the owner, or an admin
    ("GET", "/api/channels/{name}/thumbnail.jpg"): ANYONE,
    ("POST", "/api/channels/{name}/watching"): ANYONE,
    ("GET", "/api/channels/{name}/streams"): ANYONE,
    ("GET", "/api/channels/{name}/schedule"): ANYONE,
    ("POST", "/api/channels/{name}/schedule"): BROADCASTER_UP,  # and then the owner, or an admin
    ("DELETE", "/api/channels/{name}/schedule/{id}"): BROADCASTER_UP,
    ("GET", "/api/schedule"): ANYONE,
    ("GET", "/channels/{name}/schedule.ics"): ANYONE,
    ("GET", "/api/me/notifications"): SIGNED_IN,
    ("GET", "/api/push/public-key"): ANYONE,
    ("POST", "/api/me/email/verify"): SIGNED_IN,
    ("GET", "/api/email/verify"): ANYONE,
    ("GET", "/api/email/unsubscribe"): ANYONE,
    ("POST", "/api/email/unsubscribe"): ANYONE,
    ("POST", "/api/me/push-subscriptions"): SIGNED_IN,
    ("DELETE", "/api/me/push-subscriptions"): SIGNED_IN,
    ("POST", "/api/me/notifications/read"): SIGNED_IN,
    ("GET", "/api/me/notification-settings"): SIGNED_IN,
    ("PUT", "/api/me/notification-settings"): SIGNED_IN,
    ("GET", "/api/channels/{name}/webhooks"): BROADCASTER_UP,  # and then the owner, or an admin
    ("GET", "/api/channels/{name}/analytics"): BROADCASTER_UP,  # and then the owner, or an admin
    ("GET", "/api/analytics"): ADMIN,
    ("GET", "/api/channels/{name}/analytics.csv"): BROADCASTER_UP,
    ("GET", "/api/channels/{name}/streams/{stream}/analytics"): BROADCASTER_UP,
    ("GET", "/api/channels/{name}/ingest"): BROADCASTER_UP,
    ("POST", "/api/channels/{name}/webhooks"): BROADCASTER_UP,
    ("DELETE", "/api/channels/{name}/webhooks/{id}"): BROADCASTER_UP,
    ("GET", "/hls/{channel}/index.m3u8"): ANYONE,
    ("GET", "/hls/{channel}/{stream}/{rendition}/index.m3u8"): ANYONE,
    ("GET", "/hls/{channel}/{stream}/{rendition}/{object}"): ANYONE,
    ("GET", "/dash/time"): ANYONE,
    ("GET", "/dash/{channel}/manifest.mpd"): ANYONE,
    ("GET", "/dash/{channel}/{stream}/{rendition}/{object}"): ANYONE,
    ("GET", "/api/recordings/{id}"): ANYONE,
    ("DELETE", "/api/recordings/{id}"): BROADCASTER_UP,  # and then the owner, or an admin
    ("GET", "/api/recordings/{id}/media"): ANYONE,
    ("GET", "/api/recordings/{id}/thumbnail.jpg"): ANYONE,
}


def test_the_table_names_every_endpoint(tmp_path: Any) -> None:
    from support import make_settings
    from signaling.app import SERVICES, create_app

    app = create_app(make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/t.db"))
    declared = {(e.method, e.path) for e in app[SERVICES].endpoints}
    assert declared == set(TABLE), f"missing from the table: {declared - set(TABLE)}; stale: {set(TABLE) - declared}"


async def _request(api: Api, method: str, template: str, me: str, other: str, token: str | None) -> int:
    path = template.format(name=me, provider="nope", username=other, channel=me, session="nope", id="1",
                           stream="nope", rendition="source", object="p0.m4s")
    body: Any = None
    if template.startswith("/api/auth/") and method == "POST":
        body = {
            "register": {"username": f"n{abs(hash((me, token))) % 10**8}", "email": f"{me}+{abs(hash(str(token))) % 10**8}@example.com", "password": "correct horse"},
            "login": {"username": me, "password": "correct horse"},
        }.get(template.rsplit("/", 1)[1], {"refresh_token": "tlrt_unknown"})
    elif (method, template) == ("PATCH", "/api/me"):
        body = {"bio": "hi"}
    elif (method, template) == ("PATCH", "/api/channels/{name}"):
        body = {"title": "t"}
    elif template.endswith("/role"):
        body = {"role": "broadcaster"}
    elif template.endswith("/chat/settings") and method == "PATCH":
        body = {"slow_mode": 5}
    elif "/chat/bans/" in template and method == "PUT":
        body = {"seconds": 60}
    elif template.endswith("/follow"):
        path = template.format(name=other)
    status, _, _ = await api.call(method, path, body, token)
    return status


@pytest.mark.parametrize("caller", ["anonymous", *ROLES])
async def test_every_endpoint_against_every_role(api: Api, caller: str) -> None:
    await api.register("first_admin")  # takes the admin seat of the fresh installation
    other, _ = await api.user()
    if caller == "anonymous":
        me, token = other, None
    else:
        me, token = await api.user(caller)
    for (method, template), allowed in TABLE.items():
        status = await _request(api, method, template, me, other, token)
        if caller in allowed:
            assert status not in (401, 403) or template.startswith("/api/auth/"), (method, template, caller, status)
            assert status < 500, (method, template, caller, status)
        elif token is None:
            assert status == 401, (method, template, caller, status)
        else:
            assert status == 403, (method, template, caller, status)
