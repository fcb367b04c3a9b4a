"""POST /api/auth/register, /login, /refresh, /logout."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from signaling.accounts.service import AccountService
from signaling.api.client_address import client_address
from signaling.api.endpoint import ANYONE, Access, Call, Endpoint, json_response
from signaling.api.presenters import tokens_out, user_out
from signaling.api.schemas import LoginIn, RefreshIn, RegisterIn, TokensOut, UserOut
from signaling.auth.rate_limit import RateLimiter
from signaling.errors import RateLimited
from signaling.settings import Settings


class AuthApi:
    def __init__(self, accounts: AccountService, limiter: RateLimiter, settings: Settings) -> None:
        self._accounts = accounts
        self._limiter = limiter
        self._settings = settings

    async def _limit(self, key: str, limit: int, period: float) -> None:
        wait = await self._limiter.hit(key, limit, period)
        if wait:
            raise RateLimited(f"too many attempts; try again in {wait} s", retry_after=wait)

    def _address(self, call: Call[Any]) -> str:
        return client_address(call.request, self._settings.trust_forwarded_for)

    async def register(self, call: Call[RegisterIn]) -> web.StreamResponse:
        await self._limit(f"register:ip:{self._address(call)}", self._settings.rate_register_per_hour, 3600)
        body = call.body
        user = await self._accounts.register(body.username, body.email, body.password)
        return json_response(user_out(user, private=True), status=201, headers={"Location": "/api/me"})

    async def login(self, call: Call[LoginIn]) -> web.StreamResponse:
        per_minute = self._settings.rate_login_per_minute
        # Per address stops one client guessing many accounts; per account stops many clients guessing one.
        await self._limit(f"login:ip:{self._address(call)}", per_minute * 3, 60)
        await self._limit(f"login:account:{call.body.username}", per_minute, 60)
        tokens = await self._accounts.login(call.body.username, call.body.password)
        return json_response(tokens_out(tokens), headers={"Cache-Control": "no-store"})

    async def refresh(self, call: Call[RefreshIn]) -> web.StreamResponse:
        tokens = await self._accounts.refresh(call.body.refresh_token)
        return json_response(tokens_out(tokens), headers={"Cache-Control": "no-store"})

    async def logout(self, call: Call[RefreshIn]) -> web.StreamResponse:
        await self._accounts.logout(call.body.refresh_token)
        return web.Response(status=204)

    def endpoints(self) -> list[Endpoint]:
        token_holder = Access(None, "holder of the refresh token")
        return [
            Endpoint("POST", "/api/auth/register", self.register, "Create an account (and its channel)", ANYONE,
                     "auth", body=RegisterIn, response=UserOut, status=201, errors=(409, 422, 429)),
            Endpoint("POST", "/api/auth/login", self.login, "Log in with username (or email) and password",
                     ANYONE, "auth", body=LoginIn, response=TokensOut, errors=(401, 422, 429)),
            Endpoint("POST", "/api/auth/refresh", self.refresh, "Swap a refresh token for new tokens (rotation)",
                     token_holder, "auth", body=RefreshIn, response=TokensOut, errors=(401, 422)),
            Endpoint("POST", "/api/auth/logout", self.logout, "End the login session of a refresh token",
                     token_holder, "auth", body=RefreshIn, status=204, errors=(401, 422)),
        ]
