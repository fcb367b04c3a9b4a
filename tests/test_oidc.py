"""OpenID Connect sign-in end to end: a real provider on loopback, real HTTP redirects, real cookies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from support import Api, free_port
from oidc_provider import OidcProvider, OidcUser
from signaling.app import SERVICES

CLIENT_ID, CLIENT_SECRET = "tallylight-test", "s3cret-for-tests"


@dataclass
class Setup:
    base: str
    provider: OidcProvider
    api: Api
    browser: aiohttp.ClientSession

    async def follow(self, url: str, limit: int = 10) -> tuple[str, list[str]]:
        """Follow redirects like a browser (keeping cookies); the final URL and every hop."""
        hops = [url]
        for _ in range(limit):
            async with self.browser.get(url, allow_redirects=False) as response:
                if response.status not in (301, 302, 303, 307):
                    return url, hops
                url = str(response.url.join(aiohttp.client.URL(response.headers["Location"])))
                hops.append(url)
                if url.startswith(self.base + "/auth/complete") or url.startswith(self.base + "/login#"):
                    return url, hops
        raise AssertionError(f"too many redirects: {hops}")

    async def sign_in(self, next_path: str = "/settings") -> dict[str, str]:
        final, _ = await self.follow(f"{self.base}/api/auth/oidc/local/login?next={next_path}")
        fragment = parse_qs(urlsplit(final).fragment)
        return {k: v[0] for k, v in fragment.items()} | {"_url": final}


@pytest.fixture
async def oidc(app_factory: Callable[..., web.Application], clock: Any) -> AsyncIterator[Setup]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with OidcProvider(CLIENT_ID, CLIENT_SECRET, f"{base}/api/auth/oidc/local/callback") as provider:
        provider.current_user = OidcUser(sub="u-1", email="Ada@Example.com", preferred_username="Ada.L", name="Ada L")
        app = app_factory(
            public_url=base,
            oidc_providers={"local": {"discovery_url": provider.discovery_url, "client_id": CLIENT_ID,
                                      "client_secret": CLIENT_SECRET, "display_name": "Local ID"}},
        )
        server = TestServer(app, host="127.0.0.1", port=port)
        await server.start_server()
        from aiohttp.test_utils import TestClient

        async with TestClient(server) as client, aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as browser:
            yield Setup(base, provider, Api(client, app[SERVICES], clock), browser)


async def test_sign_up_through_the_provider(oidc: Setup) -> None:
    status, providers, _ = await oidc.api.call("GET", "/api/auth/providers")
    assert providers["items"] == [{"name": "local", "display_name": "Local ID", "login_url": "/api/auth/oidc/local/login"}]

    final, hops = await oidc.follow(f"{oidc.base}/api/auth/oidc/local/login?next=/settings")
    authorize = parse_qs(urlsplit(hops[1]).query)
    assert hops[1].startswith(oidc.provider.issuer + "/authorize")
    assert authorize["code_challenge_method"] == ["S256"] and authorize["nonce"] and authorize["state"]
    assert authorize["redirect_uri"] == [f"{oidc.base}/api/auth/oidc/local/callback"]
    assert final.startswith(f"{oidc.base}/auth/complete#")
    tokens = parse_qs(urlsplit(final).fragment)
    assert tokens["next"] == ["/settings"]

    status, me, _ = await oidc.api.call("GET", "/api/me", token=tokens["access_token"][0])
    assert status == 200
    assert me["username"] == "adal" and me["email"] == "ada@example.com" and me["display_name"] == "Ada L"
    # The refresh token works like any other.
    status, _, _ = await oidc.api.call("POST", "/api/auth/refresh", {"refresh_token": tokens["refresh_token"][0]})
    assert status == 200

    # Signing in again finds the same account.
    again = await oidc.sign_in()
    status, me_again, _ = await oidc.api.call("GET", "/api/me", token=again["access_token"])
    assert me_again["id"] == me["id"]


async def test_verified_email_links_to_the_existing_account(oidc: Setup) -> None:
    await oidc.api.call("POST", "/api/auth/register", {"username": "ada", "email": "ada@example.com", "password": "correct horse"})
    tokens = await oidc.sign_in()
    status, me, _ = await oidc.api.call("GET", "/api/me", token=tokens["access_token"])
    assert me["username"] == "ada"
    await oidc.api.login("ada")  # the password keeps working


async def test_unverified_email_is_refused(oidc: Setup) -> None:
    oidc.provider.current_user = OidcUser(sub="u-2", email="eve@example.com", email_verified=False)
    result = await oidc.sign_in()
    assert result["_url"].startswith(f"{oidc.base}/login#") and "verify" in result["error"]


async def test_denied_consent_and_tampering_end_on_the_login_page(oidc: Setup) -> None:
    oidc.provider.current_user = None
    result = await oidc.sign_in()
    assert "denied" in result["error"]

    oidc.provider.current_user = OidcUser(sub="u-3", email="x@example.com")
    # A callback without the flow cookie (another browser, or a forged link) is refused.
    async with aiohttp.ClientSession() as stranger:
        async with stranger.get(f"{oidc.base}/api/auth/oidc/local/callback?code=abc&state=xyz",
                                allow_redirects=False) as response:
            assert response.status == 302 and response.headers["Location"].startswith("/login#error=")
    # A state that does not match the cookie is refused.
    async with oidc.browser.get(f"{oidc.base}/api/auth/oidc/local/login", allow_redirects=False) as response:
        assert response.status == 302
    async with oidc.browser.get(f"{oidc.base}/api/auth/oidc/local/callback?code=abc&state=forged",
                                allow_redirects=False) as response:
        assert "does+not+belong" in response.headers["Location"]


async def test_next_never_leaves_the_site(oidc: Setup) -> None:
    for evil in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        result = await oidc.sign_in(next_path=evil)
        assert result["next"] == "/"


async def test_unknown_provider_is_404(oidc: Setup) -> None:
    status, problem, _ = await oidc.api.call("GET", "/api/auth/oidc/nope/login", allow_redirects=False)
    assert status == 404 and problem["status"] == 404
