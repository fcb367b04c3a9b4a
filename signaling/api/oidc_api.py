"""GET /api/auth/oidc/{provider}/login and /callback, and the list of providers for the login page."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from aiohttp import web

from signaling.accounts.service import AccountService
from signaling.api.endpoint import ANYONE, Call, Endpoint, json_response
from signaling.api.schemas import ProviderListOut, ProviderOut
from signaling.auth.oidc import FlowSealer, OidcProviders
from signaling.errors import AppError, BadRequest

COOKIE = "tally_oidc"


def redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


def _safe_next(value: str | None) -> str:
    # Only paths on this site: never an open redirect to another host.
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or len(value) > 512:
        return "/"
    return value


class OidcApi:
    def __init__(self, providers: OidcProviders, sealer: FlowSealer, accounts: AccountService, secure: bool) -> None:
        self._providers = providers
        self._sealer = sealer
        self._accounts = accounts
        self._secure = secure

    async def providers(self, call: Call[None]) -> web.StreamResponse:
        items = [
            ProviderOut(name=p.name, display_name=p.display_name, login_url=f"/api/auth/oidc/{quote(p.name)}/login")
            for p in self._providers.all()
        ]
        return json_response(ProviderListOut(items=items))

    async def login(self, call: Call[None]) -> web.StreamResponse:
        provider = self._providers.get(call.request.match_info["provider"])
        url, flow = await provider.start(_safe_next(call.request.query.get("next")))
        response = redirect(url)
        response.set_cookie(
            COOKIE, self._sealer.seal(flow), max_age=600, httponly=True, samesite="Lax", secure=self._secure,
            path="/api/auth/oidc/",
        )
        return response

    async def callback(self, call: Call[None]) -> web.StreamResponse:
        """Finish a sign-in; the browser lands on /auth/complete with tokens, or on /login with the reason."""
        try:
            fragment = await self._finish(call.request)
        except AppError as exc:
            fragment = urlencode({"error": exc.detail})
            response = redirect("/login#" + fragment)
        else:
            response = redirect("/auth/complete#" + fragment)
        response.del_cookie(COOKIE, path="/api/auth/oidc/")
        response.headers["Cache-Control"] = "no-store"
        return response

    async def _finish(self, request: web.Request) -> str:
        provider = self._providers.get(request.match_info["provider"])
        sealed = request.cookies.get(COOKIE)
        if not sealed:
            raise BadRequest("the sign-in attempt was not started here, or it expired; start again")
        flow = self._sealer.open(sealed)
        query = request.query
        if flow.provider != provider.name or query.get("state") != flow.state:
            raise BadRequest("the sign-in answer does not belong to this attempt")
        if "error" in query:
            raise BadRequest(f"the provider said: {query.get('error_description') or query['error']}"[:300])
        code = query.get("code")
        if not code or len(code) > 2048:
            raise BadRequest("the provider sent no code")
        identity = await provider.finish(flow, code)
        tokens = await self._accounts.sign_in_external(identity)
        # In the fragment, which browsers never send to a server; the page moves them to storage.
        return urlencode({"access_token": tokens.access_token, "refresh_token": tokens.refresh_token,
                          "expires_in": tokens.expires_in, "next": flow.next})

    def endpoints(self) -> list[Endpoint]:
        base = "/api/auth/oidc/{provider}"
        return [
            Endpoint("GET", "/api/auth/providers", self.providers, "The OpenID Connect providers one can sign in with",
                     ANYONE, "auth", response=ProviderListOut),
            Endpoint("GET", base + "/login", self.login, "Start OpenID Connect sign-in (redirects to the provider)",
                     ANYONE, "auth", status=302, errors=(404, 503),
                     query=(("next", "string", "a path on this site to return to"),)),
            Endpoint("GET", base + "/callback", self.callback,
                     "Where the provider returns; redirects to /auth/complete (or /login with an error)",
                     ANYONE, "auth", status=302,
                     query=(("code", "string", "from the provider"), ("state", "string", "from the provider"))),
        ]
