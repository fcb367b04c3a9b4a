"""Rate limits: one contract for the in-memory and Redis limiters, then over HTTP."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from support import SECRETS_KEYS, Api, FakeClock
from signaling.auth.rate_limit import MemoryRateLimiter, RateLimiter, RedisRateLimiter


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[RateLimiter]:
    instance: RateLimiter = (
        MemoryRateLimiter(clock)
        if request.param == "memory"
        else RedisRateLimiter("redis://127.0.0.1:6379/0", clock, prefix=f"test:{secrets.token_hex(4)}:")
    )
    yield instance
    await instance.close()


async def test_allows_the_limit_then_says_how_long_to_wait(limiter: RateLimiter, clock: FakeClock) -> None:
    assert [await limiter.hit("k", 5, 60) for _ in range(5)] == [0] * 5
    assert await limiter.hit("k", 5, 60) == 12  # one more slot every 60/5 s
    assert await limiter.hit("other", 5, 60) == 0  # keys are independent
    clock.advance(12)
    assert await limiter.hit("k", 5, 60) == 0
    assert await limiter.hit("k", 5, 60) > 0
    clock.advance(60)
    assert [await limiter.hit("k", 5, 60) for _ in range(5)] == [0] * 5


async def test_refused_hits_do_not_extend_the_wait(limiter: RateLimiter, clock: FakeClock) -> None:
    for _ in range(3):
        await limiter.hit("k", 3, 30)
    for _ in range(10):
        assert await limiter.hit("k", 3, 30) == 10
    clock.advance(10)
    assert await limiter.hit("k", 3, 30) == 0


async def test_login_is_limited_per_account_and_per_address(api: Api) -> None:
    name = (await api.register())["username"]
    bad = {"username": name, "password": "wrong horse"}
    statuses = [(await api.call("POST", "/api/auth/login", bad))[0] for _ in range(11)]
    assert statuses == [401] * 10 + [429]
    status, problem, headers = await api.call("POST", "/api/auth/login", {"username": name, "password": "correct horse"})
    assert status == 429 and int(headers["Retry-After"]) >= 1 and problem["type"].endswith("/rate-limited")
    # Other accounts from the same address still get through, up to the per-address limit (3x).
    other, _ = await api.user()
    assert (await api.call("POST", "/api/auth/login", {"username": other, "password": "correct horse"}))[0] == 200
    api.clock.advance(60)
    assert (await api.call("POST", "/api/auth/login", {"username": name, "password": "correct horse"}))[0] == 200


async def test_register_is_limited_per_address(api: Api) -> None:
    for n in range(20):
        status, body, _ = await api.call(
            "POST", "/api/auth/register", {"username": f"flood{n}", "email": f"f{n}@example.com", "password": "correct horse"}
        )
        assert status == 201, body
    status, _, headers = await api.call(
        "POST", "/api/auth/register", {"username": "flood99", "email": "f99@example.com", "password": "correct horse"}
    )
    assert status == 429 and "Retry-After" in headers


async def test_two_processes_on_one_redis_share_the_limits(app_factory, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    import redis.asyncio as aioredis
    from aiohttp.test_utils import TestClient, TestServer

    from signaling.app import SERVICES

    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    async for key in client.scan_iter("tally:rl:*"):
        await client.delete(key)
    await client.aclose()

    first = app_factory(bus_url="redis://127.0.0.1:6379/0", node_id="limits-1", secrets_keys=SECRETS_KEYS)
    second = app_factory(bus_url="redis://127.0.0.1:6379/0", node_id="limits-2", secrets_keys=SECRETS_KEYS)  # one id per node
    assert type(first[SERVICES].limiter).__name__ == "RedisRateLimiter"
    async with TestClient(TestServer(first)) as one, TestClient(TestServer(second)) as two:
        one_api, two_api = Api(one, first[SERVICES], clock), Api(two, second[SERVICES], clock)
        name = (await one_api.register())["username"]
        bad = {"username": name, "password": "wrong horse"}
        for n in range(10):
            assert (await (one_api if n % 2 else two_api).call("POST", "/api/auth/login", bad))[0] == 401
        assert (await one_api.call("POST", "/api/auth/login", bad))[0] == 429
        assert (await two_api.call("POST", "/api/auth/login", bad))[0] == 429


def test_the_client_address_is_the_trusted_proxys_hop_and_an_ipv6_clients_64() -> None:
    from aiohttp.test_utils import make_mocked_request

    from signaling.api.client_address import client_address

    def address(forwarded: str | None, trusted: bool = True) -> str:
        headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
        return client_address(make_mocked_request("GET", "/", headers=headers), trusted)

    assert address("203.0.113.9") == "203.0.113.9"
    assert address("6.6.6.6, 203.0.113.9") == "203.0.113.9"  # what the client wrote comes first: not trusted
    assert address("2001:db8:1:2:aaaa::1") == address("2001:db8:1:2:bbbb::7") == "2001:db8:1:2::/64"
    assert address("::ffff:198.51.100.4") == "198.51.100.4"
    assert address("not an address") == "not an address"
    assert address("203.0.113.9", trusted=False) != "203.0.113.9"  # without a trusted proxy: the peer's own
