"""What can go wrong in the signaling service, as the client should hear it.

    AppError                 -> its `status`, as an RFC 9457 problem document (signaling.http.problems)
    ├── BadRequest           400  malformed syntax (JSON, SDP, query)
    ├── Unauthorized         401  no or bad credentials
    ├── Forbidden            403  authenticated but not allowed
    ├── NotFound             404
    ├── Conflict             409  taken names, state clashes
    ├── PayloadTooLarge      413
    ├── UnsupportedMediaType 415
    ├── Invalid              422  well-formed but breaks a rule; `errors` names the fields
    ├── RateLimited          429  with `retry_after` seconds
    └── Unavailable          503  with optional `retry_after`

Foreign exceptions (pydantic, SQLAlchemy, aiohttp) are translated at the HTTP edge, nowhere else.
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status = 500
    title = "Internal Server Error"
    slug = "internal"

    def __init__(
        self,
        detail: str = "",
        *,
        errors: list[dict[str, Any]] | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors
        self.retry_after = retry_after
        self.headers = headers or {}


class BadRequest(AppError):
    status, title, slug = 400, "Bad Request", "bad-request"


class Unauthorized(AppError):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class Forbidden(AppError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(AppError):
    status, title, slug = 404, "Not Found", "not-found"


class MethodNotAllowed(AppError):
    status, title, slug = 405, "Method Not Allowed", "method-not-allowed"


class Conflict(AppError):
    status, title, slug = 409, "Conflict", "conflict"


class PayloadTooLarge(AppError):
    status, title, slug = 413, "Payload Too Large", "payload-too-large"


class UnsupportedMediaType(AppError):
    status, title, slug = 415, "Unsupported Media Type", "unsupported-media-type"


class Invalid(AppError):
    status, title, slug = 422, "Unprocessable Content", "invalid"


class RateLimited(AppError):
    status, title, slug = 429, "Too Many Requests", "rate-limited"


class Unavailable(AppError):
    status, title, slug = 503, "Service Unavailable", "unavailable"
