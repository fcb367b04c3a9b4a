"""Endpoints are declared once: method, path, who may call, body and response models.

The declaration drives the route, access enforcement, JSON body parsing and validation, and the
OpenAPI document, so the three cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from signaling.accounts.names import username_problem
from signaling.accounts.service import AccountService
from signaling.auth.roles import Principal, Role
from signaling.errors import (
    BadRequest,
    Forbidden,
    Invalid,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from telemetry.context import USER

B = TypeVar("B")
MAX_BODY = web.AppKey("max_body_bytes", int)


@dataclass(frozen=True, slots=True)
class Access:
    """Who may call an endpoint. `min_role` None means anyone, signed in or not."""

    min_role: Role | None
    note: str = ""

    def describe(self) -> str:
        who = "anyone" if self.min_role is None else f"{self.min_role.label} or above"
        return f"{who}; {self.note}" if self.note else who


ANYONE = Access(None)
SIGNED_IN = Access(Role.VIEWER)


@dataclass(slots=True)
class Call(Generic[B]):
    request: web.Request
    principal: Principal | None
    body: B

    @property
    def user(self) -> Principal:
        assert self.principal is not None, "only for endpoints that require sign-in"
        return self.principal


Handler = Callable[[Call[Any]], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    access: Access
    tag: str
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    query: tuple[tuple[str, str, str], ...] = ()  # (name, json type, description)
    raw_body: str | None = None  # a non-JSON request content type (application/sdp ...)
    extra: dict[str, Any] = field(default_factory=dict)
    body_optional: bool = False  # `body` may be left out (the handler then gets None)


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("use 'Authorization: Bearer <token>'")
    return token.strip()


M = TypeVar("M", bound=BaseModel)


async def read_json(request: web.Request, model: type[M]) -> M:
    content_type = request.content_type
    if content_type != "application/json":
        raise UnsupportedMediaType("send the body as application/json")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"the body is larger than {request.app[MAX_BODY]} bytes") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Invalid("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Invalid("the body does not match the schema", errors=field_errors(exc)) from None


def field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(part) for part in error["loc"]) or "body", "message": _message(error)}
        for error in exc.errors(include_url=False, include_input=False)
    ]


def _message(error: Any) -> str:
    """Words for a person filling in a form, not pydantic's ("Value should have at least 1 item after
    validation, not 0"); our own validators' words without pydantic's "Value error, " in front."""
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    human = _HUMAN.get(kind)
    if human is not None:
        try:
            return human.format(**ctx)
        except (KeyError, IndexError, ValueError):
            pass
    return str(error["msg"])


_HUMAN = {
    "missing": "This is required.",
    "string_too_short": "Use at least {min_length} characters.",
    "string_too_long": "Use at most {max_length} characters.",
    "too_short": "Give at least {min_length}.",
    "too_long": "Give at most {max_length}.",
    "string_type": "This should be text.",
    "int_type": "This should be a whole number.",
    "int_parsing": "This should be a whole number.",
    "bool_type": "This should be true or false.",
    "bool_parsing": "This should be true or false.",
    "greater_than_equal": "Use {ge} or more.",
    "less_than_equal": "Use {le} or less.",
    "greater_than": "Use more than {gt}.",
    "less_than": "Use less than {lt}.",
    "extra_forbidden": "This field is not known here.",
    "literal_error": "Choose one of {expected}.",
    "enum": "Choose one of {expected}.",
    "url_parsing": "This is not a valid web address.",
    "datetime_parsing": "Give a date and time, like 2027-01-31T18:00:00Z.",
    "datetime_from_date_parsing": "Give a date and time, like 2027-01-31T18:00:00Z.",
    "datetime_type": "Give a date and time, like 2027-01-31T18:00:00Z.",
    "url_scheme": "Use an address starting with {expected_schemes}.",
}


class Authenticator:
    def __init__(self, accounts: AccountService) -> None:
        self._accounts = accounts

    async def principal(self, request: web.Request) -> Principal | None:
        token = bearer_token(request)
        return None if token is None else await self._accounts.authenticate(token)


def route(endpoint: Endpoint, authenticator: Authenticator) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler for a declared endpoint: access check, body parsing, then the handler."""

    own_auth = bool(endpoint.extra.get("own_auth"))

    async def handle(request: web.Request) -> web.StreamResponse:
        # Endpoints with their own credentials (a WHIP stream key, a session URL) read them themselves.
        principal = None if own_auth else await authenticator.principal(request)
        if principal is not None:
            USER.set(principal.username)
        minimum = endpoint.access.min_role
        if minimum is not None:
            if principal is None:
                raise Unauthorized("sign in first")
            if not principal.at_least(minimum):
                raise Forbidden(f"this needs the {minimum.label} role")
        for name, _, _ in endpoint.query:
            if len(request.query.getall(name, ())) > 1:  # the first or the last? refuse rather than guess
                raise BadRequest(
                    f"give {name} at most once",
                    errors=[{"field": name, "message": "given more than once"}],
                    headers={"Cache-Control": "no-store"},  # like every HLS error: no CDN keeps it
                )
        body: Any = None
        if endpoint.body is not None and (request.body_exists or not endpoint.body_optional):
            body = await read_json(request, endpoint.body)
        return await endpoint.handler(Call(request, principal, body))

    handle.__name__ = getattr(endpoint.handler, "__name__", "endpoint")
    return handle


def json_response(model: BaseModel | None, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    if model is None:
        return web.Response(status=status, headers=headers)
    return web.Response(
        status=status, body=model.model_dump_json().encode(), content_type="application/json", headers=headers
    )


def name_param(request: web.Request, key: str) -> str:
    """A channel or user name from the path; what cannot be a name is not found (and never reaches SQL)."""
    name = request.match_info[key]
    if username_problem(name) is not None:
        raise NotFound(f"there is no {key} {name[:64]!r}")
    return name


MAX_ID = 2**31 - 1  # row ids are 32-bit integers in the database


def id_param(request: web.Request, key: str, what: str) -> int:
    """A numeric id from the path; anything else names nothing there is (404)."""
    raw = request.match_info[key]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or int(raw) > MAX_ID:
        raise NotFound(f"there is no {what} {raw[:20]!r}")
    return int(raw)


def int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not (low <= int(raw) <= high):
        raise Invalid(f"{name} must be a whole number from {low} to {high}", errors=[{"field": name, "message": "out of range"}])
    return int(raw)
