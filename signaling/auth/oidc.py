"""OpenID Connect sign-in: authorization code flow with PKCE, state and nonce (authlib's client).

The flow's secrets (state, nonce, PKCE verifier) travel in a short-lived sealed cookie, so any
signaling process can finish a sign-in that another one started.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OctKey

from signaling.accounts.service import ExternalIdentity
from signaling.errors import BadRequest, NotFound, Unauthorized, Unavailable
from signaling.settings import OidcProviderSettings

FLOW_TTL = 600
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]


@dataclass(frozen=True, slots=True)
class Flow:
    provider: str
    state: str
    nonce: str
    verifier: str
    next: str


class FlowSealer:
    """Seals a Flow into a compact HS256 JWT for a cookie, and opens it again."""

    def __init__(self, secret: str, clock: Callable[[], float] = time.time) -> None:
        self._key = OctKey.import_key(("oidc-flow:" + secret).encode())
        self._clock = clock

    def seal(self, flow: Flow) -> str:
        now = int(self._clock())
        claims = {"p": flow.provider, "s": flow.state, "n": flow.nonce, "v": flow.verifier, "x": flow.next,
                  "exp": now + FLOW_TTL}
        return jwt.encode({"alg": "HS256"}, claims, self._key)

    def open(self, sealed: str) -> Flow:
        try:
            claims = jwt.decode(sealed, self._key, algorithms=["HS256"]).claims
            jwt.JWTClaimsRegistry(now=int(self._clock()), exp={"essential": True}).validate(claims)
            return Flow(claims["p"], claims["s"], claims["n"], claims["v"], claims["x"])
        except (JoseError, KeyError, ValueError) as exc:
            raise BadRequest("the sign-in attempt expired or was tampered with; start again") from exc


class OidcProvider:
    """One configured provider: its discovery document and keys, fetched lazily and cached."""

    def __init__(self, name: str, settings: OidcProviderSettings, http: httpx.AsyncClient, redirect_uri: str) -> None:
        self.name = name
        self.settings = settings
        self.display_name = settings.display_name or name
        self.redirect_uri = redirect_uri
        self._http = http
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._metadata_at > 3600:
            self._metadata = await self._get_json(str(self.settings.discovery_url))
            self._metadata_at = time.monotonic()
        return self._metadata

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise Unavailable(f"the sign-in provider {self.name!r} cannot be reached", retry_after=30) from exc
        if not isinstance(data, dict):
            raise Unavailable(f"the sign-in provider {self.name!r} answered nonsense", retry_after=30)
        return data

    def _client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.settings.client_id,
            client_secret=self.settings.client_secret,
            scope=self.settings.scope,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            timeout=10,
        )

    async def start(self, next_path: str) -> tuple[str, Flow]:
        """The provider URL to send the browser to, and the flow to remember meanwhile."""
        metadata = await self.metadata()
        flow = Flow(self.name, secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48), next_path)
        async with self._client() as client:
            url, _ = client.create_authorization_url(
                metadata["authorization_endpoint"],
                state=flow.state,
                nonce=flow.nonce,
                code_verifier=flow.verifier,
            )
        return url, flow

    async def finish(self, flow: Flow, code: str) -> ExternalIdentity:
        metadata = await self.metadata()
        try:
            async with self._client() as client:
                token = await client.fetch_token(
                    metadata["token_endpoint"], grant_type="authorization_code", code=code,
                    code_verifier=flow.verifier,
                )
        except Exception as exc:  # authlib raises OAuthError, httpx its own: either way the exchange failed
            raise Unauthorized(f"the provider refused the sign-in: {exc}") from exc
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise Unauthorized("the provider sent no id_token")
        claims = await self._verify(id_token, metadata, flow.nonce)
        return ExternalIdentity(
            provider=self.name,
            subject=str(claims["sub"]),
            email=str(claims.get("email", "")).lower(),
            email_verified=claims.get("email_verified") is True and bool(claims.get("email")),
            preferred_username=str(claims.get("preferred_username") or ""),
            name=str(claims.get("name") or ""),
        )

    async def _verify(self, id_token: str, metadata: dict[str, Any], nonce: str) -> dict[str, Any]:
        for refresh in (False, True):  # a key we have not seen: the provider rotated; fetch the set again
            if self._keys is None or refresh:
                self._keys = KeySet.import_key_set(await self._get_json(metadata["jwks_uri"]))  # type: ignore[arg-type]
            try:
                claims = jwt.decode(id_token, self._keys, algorithms=ID_TOKEN_ALGORITHMS).claims
                break
            except JoseError as exc:
                if refresh:
                    raise Unauthorized("the id_token's signature does not verify") from exc
        try:
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": metadata["issuer"]},
                sub={"essential": True},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(claims)
        except JoseError as exc:
            raise Unauthorized(f"the id_token is not valid here: {exc}") from exc
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.settings.client_id not in audiences:
            raise Unauthorized("the id_token was issued to another client")
        return claims


class OidcProviders:
    """The providers configured in settings; owns the HTTP client they share."""

    def __init__(self, configured: dict[str, OidcProviderSettings], base_url: str) -> None:
        self._http = httpx.AsyncClient(timeout=10, follow_redirects=False)
        self._providers = {
            name: OidcProvider(name, cfg, self._http, f"{base_url}/api/auth/oidc/{name}/callback")
            for name, cfg in configured.items()
        }

    def get(self, name: str) -> OidcProvider:
        provider = self._providers.get(name)
        if provider is None:
            raise NotFound(f"there is no sign-in provider {name!r}")
        return provider

    def all(self) -> list[OidcProvider]:
        return list(self._providers.values())

    async def close(self) -> None:
        await self._http.aclose()
