"""The chat wire protocol (PROTOCOL.md beside this file): reading what clients send, writing what they get.

Every frame is one JSON object with a `type`. Inbound frames are checked here, before anything else
sees them, and every problem becomes a `ChatProblem` with a stable code that the client receives as an
`error` frame; the connection stays open. Outbound frames are serialised once per event, then the same
text goes to every connection.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MAX_FRAME_CHARS = 4096  # larger inbound frames are refused before parsing
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


class ChatProblem(Exception):
    """Something a client sent or tried that is refused; it reaches that client as an `error` frame."""

    def __init__(self, code: str, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        self.nonce: str | None = None  # the refused frame's, when it had a readable one


@dataclass(frozen=True, slots=True)
class Send:
    text: str
    nonce: str | None


@dataclass(frozen=True, slots=True)
class Auth:
    token: str


@dataclass(frozen=True, slots=True)
class Ping:
    nonce: str | None


Inbound = Send | Auth | Ping


def parse(frame: str | bytes, max_length: int) -> Inbound:
    """One inbound frame as a command, or ChatProblem saying what is wrong with it."""
    if isinstance(frame, bytes):
        try:
            frame = frame.decode("utf-8")
        except UnicodeDecodeError:
            raise ChatProblem("bad_encoding", "frames must be UTF-8 text") from None
    if len(frame) > MAX_FRAME_CHARS:
        raise ChatProblem("too_large", f"a frame may hold at most {MAX_FRAME_CHARS} characters")
    try:
        data = json.loads(frame)
    except (json.JSONDecodeError, RecursionError):
        raise ChatProblem("bad_json", "a frame must be one JSON object, for example {\"type\": \"send\", \"text\": \"hi\"}") from None
    if not isinstance(data, dict):
        raise ChatProblem("bad_json", "a frame must be a JSON object")
    kind = data.get("type")
    nonce = _nonce(data.get("nonce"))
    if kind == "send":
        try:
            return Send(clean_text(data.get("text"), max_length), nonce)
        except ChatProblem as problem:
            problem.nonce = nonce
            raise
    if kind == "auth":
        token = data.get("token")
        if not isinstance(token, str) or not token or len(token) > 2048:
            raise ChatProblem("bad_message", "auth needs a token: {\"type\": \"auth\", \"token\": \"<access token>\"}")
        return Auth(token)
    if kind == "ping":
        return Ping(nonce)
    raise ChatProblem("unknown_type", f"unknown frame type {str(kind)[:40]!r}; clients send auth, send or ping")


def _nonce(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64 or not value.isprintable():
        raise ChatProblem("bad_message", "a nonce is a string of at most 64 printable characters")
    return value


def clean_text(value: Any, max_length: int) -> str:
    """A chat message's text: trimmed, NFC, non-empty, within `max_length`, no control characters."""
    if not isinstance(value, str):
        raise ChatProblem("bad_message", "text must be a string")
    text = unicodedata.normalize("NFC", value.strip())
    if not text:
        raise ChatProblem("empty", "the message is empty")
    if len(text) > max_length:
        raise ChatProblem("too_long", f"a message may be at most {max_length} characters (this one has {len(text)})")
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cs") or char in BIDI_CONTROLS:
            raise ChatProblem("control_characters", f"the message contains a control character (U+{ord(char):04X})")
    return text


# --- outbound -------------------------------------------------------------------------------------


def encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def timestamp(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error(problem: ChatProblem, nonce: str | None = None) -> str:
    frame: dict[str, Any] = {"type": "error", "code": problem.code, "detail": problem.detail}
    if problem.retry_after is not None:
        frame["retry_after"] = problem.retry_after
    if nonce is not None:
        frame["nonce"] = nonce
    return encode(frame)
