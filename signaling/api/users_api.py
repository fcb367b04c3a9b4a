"""Administration of users: list them, change roles."""

from __future__ import annotations

from aiohttp import web

from signaling.accounts.service import AccountService
from signaling.api.endpoint import Access, Call, Endpoint, json_response, name_param
from signaling.api.presenters import user_out
from signaling.api.schemas import RoleIn, UserListOut, UserOut
from signaling.auth.roles import Role

ADMIN = Access(Role.ADMIN)


class UsersApi:
    def __init__(self, accounts: AccountService) -> None:
        self._accounts = accounts

    async def list_users(self, call: Call[None]) -> web.StreamResponse:
        users = await self._accounts.list_users()
        return json_response(UserListOut(items=[user_out(u, private=True) for u in users]))

    async def set_role(self, call: Call[RoleIn]) -> web.StreamResponse:
        user = await self._accounts.set_role(
            name_param(call.request, "username"), Role.parse(call.body.role), by=call.user
        )
        return json_response(user_out(user, private=True))

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("GET", "/api/users", self.list_users, "All users (first 200)", ADMIN, "admin",
                     response=UserListOut, errors=(401, 403)),
            Endpoint("PUT", "/api/users/{username}/role", self.set_role, "Change a user's role", ADMIN, "admin",
                     body=RoleIn, response=UserOut, errors=(401, 403, 404, 422)),
        ]
