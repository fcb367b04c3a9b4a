"""The one message type on the bus and its wire codec."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    """A topic and a JSON object; `reply_to` is set on requests."""

    topic: str
    payload: dict[str, Any] = field(default_factory=dict)
    reply_to: str | None = None

    def __post_init__(self) -> None:
        if not self.topic or not isinstance(self.topic, str):
            raise ValueError("a message needs a topic")
        if not isinstance(self.payload, dict):
            raise TypeError("a message payload is a JSON object")

    def encode(self) -> bytes:
        body: dict[str, Any] = {"t": self.topic, "p": self.payload}
        if self.reply_to:
            body["r"] = self.reply_to
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def decode(cls, data: bytes | str) -> Message:
        """The message in `data`; ValueError when it is not one."""
        try:
            body = json.loads(data)
            topic, payload, reply_to = body["t"], body["p"], body.get("r")
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a bus message: {exc}") from None
        if not isinstance(topic, str) or not isinstance(payload, dict) or not isinstance(reply_to, (str, type(None))):
            raise ValueError("not a bus message: wrong field types")
        return cls(topic=topic, payload=payload, reply_to=reply_to)
