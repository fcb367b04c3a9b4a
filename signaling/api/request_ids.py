"""`X-Request-Id`: each request gets an id, the client's own when it sent a sane one (a proxy in front
sets it, so its logs and ours meet), else a new one; the answer carries it back, and every log line
written while the request is handled (and by what it starts) carries it as `request_id`."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from contextvars import Token

from aiohttp import web

from telemetry.context import FIELDS, REQUEST_ID

HEADER = "X-Request-Id"
REQUEST_ID_KEY = web.RequestKey("request_id", str)
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@web.middleware
async def request_ids(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    given = request.headers.get(HEADER, "")
    request_id = given if _SANE.fullmatch(given) else uuid.uuid4().hex
    request[REQUEST_ID_KEY] = request_id
    # A keep-alive connection handles its requests in one task: nothing of the last request's ids stays.
    tokens: list[tuple[object, Token[str]]] = [(variable, variable.set("")) for variable in FIELDS.values()]
    REQUEST_ID.set(request_id)
    try:
        return await handler(request)
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)  # type: ignore[attr-defined]


async def answer_with_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer, errors and files included, names its request."""
    request_id = request.get(REQUEST_ID_KEY)
    if request_id:
        response.headers[HEADER] = request_id
