"""The process's log handler: plain text for a terminal, or one JSON object per line (`LOG_FORMAT=json`)
for Loki or ELK, each with the ids of `telemetry.context` that are set and the node's id.

JSON lines are made by python-json-logger (maintained, a `logging.Formatter`): time (ISO 8601, UTC),
level, logger, message, then request_id, user, channel, stream, session and node when known, and the
traceback of an exception as `exc_info`.
"""

from __future__ import annotations

import logging
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from telemetry.context import FIELDS

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ContextFilter(logging.Filter):
    """Puts the context's ids (empty when unknown) and the node's id on every record."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self._node = node

    def filter(self, record: logging.LogRecord) -> bool:
        for name, variable in FIELDS.items():
            setattr(record, name, variable.get())
        record.node = self._node
        return True


class _Json(JsonFormatter):
    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in log_data.items() if value not in ("", None)}


def formatter(format_name: str) -> logging.Formatter:
    if format_name == "json":
        return _Json("%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(user)s %(channel)s "
                     "%(stream)s %(session)s %(node)s",
                     rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                     datefmt="%Y-%m-%dT%H:%M:%S%z")
    return logging.Formatter(TEXT)


def configure(level: str, format_name: str = "text", node: str = "") -> None:
    """Replace the root logger's handlers with one on stderr in `format_name` ("text" or "json")."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter(node))
    handler.setFormatter(formatter(format_name))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
