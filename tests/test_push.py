"""Browser push with the real server, its worker and a push service stand-in written from the RFCs
(tests/push_service.py): a go-live reaches a follower's browsers encrypted to their keys and signed
with the installation's VAPID key; a 410 removes a browser; a 500 is tried again; push turned off
sends nothing; bad subscriptions are refused and change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from push_service import Browser, PushService
from signaling.app import SERVICES
from support import Api, FakeClock
from test_notifications import is_live, outbox_empty
from test_whip_whep import go_live, stream_key, until


@pytest.fixture
async def live(app_factory: Callable[..., web.Application], clock: FakeClock) -> AsyncIterator[Api]:
    app = app_factory(webrtc_host_addresses=["127.0.0.1"], publisher_timeout=1.5, outbound_allow_private=True)
    async with TestClient(TestServer(app)) as client:
        yield Api(client, app[SERVICES], clock)


@pytest.fixture
async def service() -> AsyncIterator[PushService]:
    found = PushService([Browser("laptop"), Browser("phone"), Browser("old"), Browser("flaky")])
    await found.start()
    yield found
    await found.close()


async def test_a_go_live_reaches_a_followers_browsers_encrypted_and_signed(live: Api, service: PushService) -> None:
    star, star_token = await live.user()
    fan, fan_token = await live.user()
    status, key, headers = await live.call("GET", "/api/push/public-key")
    assert status == 200 and len(key["public_key"]) == 87 and "max-age" in headers["Cache-Control"]  # 65 bytes, base64url
    assert (await live.call("GET", "/api/push/public-key"))[1] == key  # one key, kept

    assert (await live.call("PUT", f"/api/channels/{star}/follow", token=fan_token))[0] == 200
    for n, name in enumerate(("laptop", "phone", "old", "flaky")):
        status, body, _ = await live.call("POST", "/api/me/push-subscriptions", service.browsers[name].subscription(service.url),
                                          token=fan_token)
        assert status == 201 and body == {"subscribed": True, "devices": n + 1}, body
    again = await live.call("POST", "/api/me/push-subscriptions", service.browsers["laptop"].subscription(service.url),
                            token=fan_token)
    assert again[0] == 200 and again[1]["devices"] == 4  # the same browser again: no second subscription
    service.gone.add("old")
    service.fail["flaky"] = [500]

    key_now = await stream_key(live, star_token)
    publisher, _ = await go_live(live, star, key_now)
    await until(lambda: is_live(live, star))
    live.clock.advance(31)
    await until(lambda: _pushed(service, "laptop", "phone"))
    got = service.received[0]
    assert service.refused == []
    title = (await live.call("GET", f"/api/channels/{star}"))[1]["title"]
    assert got.payload == {"title": f"{star} is live", "body": title, "url": f"/watch/{star}", "tag": got.payload["tag"]}
    assert got.vapid_key == key["public_key"]
    assert got.headers["Urgency"] == "high" and got.headers["TTL"] == "3600" and got.headers["Topic"]

    # The push service said the old browser is gone: it is dropped. The flaky one is tried again.
    await until(lambda: _devices(live, fan_token, 3))
    assert not service.for_("flaky")
    live.clock.advance(20)
    await until(lambda: _pushed(service, "flaky"))

    # Push turned off: the next go-live (after the cooldown) reaches no browser.
    await publisher.close()
    await until(lambda: is_live(live, star, False))
    assert (await live.call("PUT", "/api/me/notification-settings", {"push": False}, token=fan_token))[0] == 200
    live.clock.advance(620)
    star_token = (await live.login(star))["access_token"]
    fan_token = (await live.login(fan))["access_token"]
    publisher, _ = await go_live(live, star, key_now)
    await until(lambda: is_live(live, star))
    live.clock.advance(31)
    await until(lambda: outbox_empty(live))
    assert len(service.for_("laptop")) == 1
    assert len((await live.call("GET", "/api/me/notifications", token=fan_token))[1]["items"]) == 2  # in-app still
    await publisher.close()

    status, body, _ = await live.call("DELETE", "/api/me/push-subscriptions", {"endpoint": f"{service.url}/push/phone"},
                                      token=fan_token)
    assert status == 200 and body == {"subscribed": False, "devices": 2}


async def _pushed(service: PushService, *names: str) -> bool:
    return all(service.for_(name) for name in names)


async def _devices(api: Api, token: str, count: int) -> bool:
    status, body, _ = await api.call("DELETE", "/api/me/push-subscriptions", {"endpoint": "https://push.example/none"}, token=token)
    return status == 200 and body["devices"] == count


async def test_bad_subscriptions_are_refused(api: Api) -> None:
    _, token = await api.user()
    good = Browser("x").subscription("https://push.example.com")
    bad: list[Any] = [
        {**good, "endpoint": "http://push.example.com/x"},  # not https
        {**good, "endpoint": "https://127.0.0.1/x"},  # inside
        {**good, "endpoint": "https://10.1.2.3/x"},
        {**good, "endpoint": "https://[::ffff:127.0.0.1]/x"},
        {**good, "endpoint": "https://push.example.com/" + "x" * 1100},
        {**good, "keys": {"p256dh": "AAAA", "auth": good["keys"]["auth"]}},
        {**good, "keys": {"p256dh": good["keys"]["p256dh"], "auth": "c2hvcnQ"}},
        {**good, "keys": {"p256dh": good["keys"]["p256dh"][:-6] + "AAAAAA", "auth": good["keys"]["auth"]}},  # off the curve
        {**good, "keys": {"p256dh": "!!!", "auth": "!!!"}},
        {"endpoint": good["endpoint"]},
        {**good, "extra": 1},
    ]
    for body in bad:
        status, problem, _ = await api.call("POST", "/api/me/push-subscriptions", body, token=token)
        assert status == 422, (body, status, problem)
    assert (await api.call("POST", "/api/me/push-subscriptions", good))[0] == 401
    status, body, _ = await api.call("POST", "/api/me/push-subscriptions", good, token=token)
    assert status == 201 and body["devices"] == 1
    for n in range(12):  # at most ten browsers: the oldest go
        await api.call("POST", "/api/me/push-subscriptions", Browser(f"b{n}").subscription("https://push.example.com"),
                       token=token)
    status, body, _ = await api.call("DELETE", "/api/me/push-subscriptions", {"endpoint": good["endpoint"]}, token=token)
    assert status == 200 and body["devices"] == 10
