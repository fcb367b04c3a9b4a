"""The ids a log line is about, carried in context variables: set where they become known (the HTTP
request's id at the door, the user once authenticated, the channel, stream and session where the media
plane makes them) and read by the log formatter. A task started while they are set inherits them, so
what a request sets in motion (aiortc's connection tasks, a session's close) is logged with its ids.
Background tasks started with the process carry none.
"""

from __future__ import annotations

from contextvars import ContextVar

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="")
USER: ContextVar[str] = ContextVar("user", default="")
CHANNEL: ContextVar[str] = ContextVar("channel", default="")
STREAM: ContextVar[str] = ContextVar("stream", default="")
SESSION: ContextVar[str] = ContextVar("session", default="")

FIELDS = {"request_id": REQUEST_ID, "user": USER, "channel": CHANNEL, "stream": STREAM, "session": SESSION}
