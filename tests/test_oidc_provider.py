"""Proves the test OIDC provider works, using nothing but plain HTTP."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2 as httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from oidc_provider import OidcProvider, OidcUser

CLIENT_ID = "tallylight"
CLIENT_SECRET = "s3cret"
REDIRECT_URI = "http://127.0.0.1:9/auth/callback"
USER = OidcUser(sub="u-1", email="ada@example.org", preferred_username="ada", name="Ada L")


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    with OidcProvider(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI) as p:
        p.current_user = USER
        yield p


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(follow_redirects=False, timeout=10) as c:
        yield c


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize(http: httpx.Client, provider: OidcProvider, **overrides: str) -> httpx.Response:
    meta = http.get(provider.discovery_url).json()
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email profile",
        "state": "st-123",
        "nonce": "n-456",
        "code_challenge_method": "S256",
        **overrides,
    }
    return http.get(meta["authorization_endpoint"], params={k: v for k, v in params.items() if v})


def redirect_query(resp: httpx.Response) -> dict[str, str]:
    assert resp.status_code == 302, resp.text
    location = urlsplit(resp.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    return {k: v[0] for k, v in parse_qs(location.query).items()}


def get_code(http: httpx.Client, provider: OidcProvider, challenge: str) -> str:
    query = redirect_query(authorize(http, provider, code_challenge=challenge))
    assert query["state"] == "st-123"
    return query["code"]


def exchange(http: httpx.Client, provider: OidcProvider, code: str, verifier: str,
             redirect_uri: str = REDIRECT_URI) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": redirect_uri, "code_verifier": verifier}
    return http.post(f"{provider.issuer}/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET))


def verify_id_token(http: httpx.Client, provider: OidcProvider, id_token: str) -> dict[str, Any]:
    keys = KeySet.import_key_set(http.get(f"{provider.issuer}/jwks").json())
    token = jwt.decode(id_token, keys, algorithms=["RS256"])
    assert token.header["kid"] == keys.keys[0].kid
    JWTClaimsRegistry(
        iss={"essential": True, "value": provider.issuer},
        aud={"essential": True, "value": CLIENT_ID},
        nonce={"essential": True, "value": "n-456"},
    ).validate(token.claims)
    return token.claims


def test_discovery(provider: OidcProvider, http: httpx.Client) -> None:
    meta = http.get(provider.discovery_url).json()
    assert meta["issuer"] == provider.issuer
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["id_token_signing_alg_values_supported"] == ["RS256"]
    assert {"client_secret_basic", "client_secret_post"} <= set(
        meta["token_endpoint_auth_methods_supported"])
    assert http.get(meta["jwks_uri"]).json()["keys"][0]["kty"] == "RSA"


def test_full_code_flow(provider: OidcProvider, http: httpx.Client) -> None:
    verifier, challenge = pkce_pair()
    resp = exchange(http, provider, get_code(http, provider, challenge), verifier)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"].lower() == "bearer"

    claims = verify_id_token(http, provider, body["id_token"])
    assert claims["sub"] == "u-1"
    assert claims["email"] == "ada@example.org" and claims["email_verified"] is True
    assert claims["preferred_username"] == "ada" and claims["name"] == "Ada L"
    assert claims["exp"] > claims["iat"] and "auth_time" in claims

    info = http.get(f"{provider.issuer}/userinfo",
                    headers={"Authorization": f"Bearer {body['access_token']}"})
    assert info.status_code == 200 and info.json()["email"] == "ada@example.org"
    assert http.get(f"{provider.issuer}/userinfo").status_code == 401
    assert provider.requests[-1] == "/userinfo"
    assert any(r.startswith("/authorize?") for r in provider.requests)


def test_client_secret_post(provider: OidcProvider, http: httpx.Client) -> None:
    verifier, challenge = pkce_pair()
    form = {"grant_type": "authorization_code", "code": get_code(http, provider, challenge),
            "redirect_uri": REDIRECT_URI, "code_verifier": verifier,
            "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    resp = http.post(f"{provider.issuer}/token", data=form)
    assert resp.status_code == 200, resp.text
    verify_id_token(http, provider, resp.json()["id_token"])


def test_wrong_client_secret(provider: OidcProvider, http: httpx.Client) -> None:
    verifier, challenge = pkce_pair()
    form = {"grant_type": "authorization_code", "code": get_code(http, provider, challenge),
            "redirect_uri": REDIRECT_URI, "code_verifier": verifier}
    resp = http.post(f"{provider.issuer}/token", data=form, auth=(CLIENT_ID, "nope"))
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"


def test_wrong_code_verifier(provider: OidcProvider, http: httpx.Client) -> None:
    _, challenge = pkce_pair()
    wrong, _ = pkce_pair()
    resp = exchange(http, provider, get_code(http, provider, challenge), wrong)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


def test_code_is_single_use(provider: OidcProvider, http: httpx.Client) -> None:
    verifier, challenge = pkce_pair()
    code = get_code(http, provider, challenge)
    assert exchange(http, provider, code, verifier).status_code == 200
    resp = exchange(http, provider, code, verifier)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


def test_missing_pkce_rejected(provider: OidcProvider, http: httpx.Client) -> None:
    query = redirect_query(authorize(http, provider, code_challenge_method=""))
    assert query["error"] == "invalid_request" and "code" not in query
    _, challenge = pkce_pair()
    plain = authorize(http, provider, code_challenge=challenge, code_challenge_method="plain")
    assert redirect_query(plain)["error"] == "invalid_request"


def test_wrong_redirect_uri(provider: OidcProvider, http: httpx.Client) -> None:
    _, challenge = pkce_pair()
    resp = authorize(http, provider, code_challenge=challenge,
                     redirect_uri="http://127.0.0.1:9/evil")
    # Never redirect to an unregistered URI: the error is shown at the provider.
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"

    verifier, challenge = pkce_pair()
    code = get_code(http, provider, challenge)
    resp = exchange(http, provider, code, verifier, redirect_uri=REDIRECT_URI + "/x")
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


def test_no_user_is_access_denied(provider: OidcProvider, http: httpx.Client) -> None:
    provider.current_user = None
    _, challenge = pkce_pair()
    query = redirect_query(authorize(http, provider, code_challenge=challenge))
    assert query["error"] == "access_denied" and query["state"] == "st-123"
    assert "code" not in query
