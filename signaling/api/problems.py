"""Every error leaves the service as an RFC 9457 problem document, from this one middleware."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from signaling.errors import AppError, MethodNotAllowed, NotFound, PayloadTooLarge

log = logging.getLogger(__name__)

PROBLEM_BASE = "https://tallylight.dev/problems/"


def problem_response(error: AppError) -> web.Response:
    body: dict[str, object] = {
        "type": PROBLEM_BASE + error.slug,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
    }
    if error.errors:
        body["errors"] = error.errors
    headers = dict(error.headers)
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if error.status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="tallylight"')  # RFC 6750 section 3
    return web.json_response(body, status=error.status, headers=headers, content_type="application/problem+json")


def _from_http(exc: web.HTTPException) -> AppError:
    if exc.status == 404:
        return NotFound("nothing here")
    if exc.status == 405:
        error: AppError = MethodNotAllowed("this path does not take that method")
        error.headers["Allow"] = exc.headers.get("Allow", "")
        return error
    if exc.status == 413:
        return PayloadTooLarge("the body is too large")
    error = AppError(exc.reason)
    error.status, error.title, error.slug = exc.status, exc.reason, "http-" + str(exc.status)
    return error


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AppError as exc:
        return problem_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and other non-errors pass through
        return problem_response(_from_http(exc))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(AppError("something went wrong on our side"))
