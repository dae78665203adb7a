"""Logging set-up: plain text for people, one JSON object per line for machines.

Logs go to stderr: PostgreSQL captures archive_command's stderr in its own
log, and stdout stays free for results (``--json``).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime

# What every LogRecord carries; anything else on a record came from ``extra={...}``.
_STANDARD = frozenset(
    [*vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message", "asctime", "taskName"]
)


class JsonFormatter(logging.Formatter):
    """One object per line; fields passed as ``log.info(..., extra={...})`` become keys,
    so a log collector can read a job's outcome, duration and sizes without parsing text."""

    def format(self, record: logging.LogRecord) -> str:
        _no_none(record)
        data: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in data:
                data[key] = _json_value(value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    """``2026-12-04 13:32:36Z INFO janua_backup.x: message``: UTC, the form every text
    output uses (output.format.utc; not imported: humanize stays off wal-push's path)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%d %H:%M:%SZ")

    def format(self, record: logging.LogRecord) -> str:
        _no_none(record)
        return super().format(record)


def _no_none(record: logging.LogRecord) -> None:
    """``key=None`` in a log line is Python leaking out: an unknown value reads ``-``;
    a datetime argument reads as every text output writes times (UTC, ``Z``)."""
    if isinstance(record.args, tuple):
        record.args = tuple(_plain(arg) for arg in record.args)


def _plain(arg: object) -> object:
    if arg is None:
        return "-"
    if isinstance(arg, datetime):
        return arg.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return arg


def _json_value(value: object) -> object:
    if isinstance(value, datetime):  # RFC 3339, as the JSON outputs
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


# A progress line being redrawn on stderr (output.progress) and the log handler
# write under this lock; the handler clears the line first, so a record never
# lands glued onto it.
OUTPUT_LOCK = threading.RLock()
_clear_status: Callable[[], None] | None = None


def set_status_line(clear: Callable[[], None] | None) -> None:
    """Register (or, with None, forget) what erases the progress line before a record."""
    global _clear_status
    with OUTPUT_LOCK:
        _clear_status = clear


class StatusAwareHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def emit(self, record: logging.LogRecord) -> None:
        with OUTPUT_LOCK:
            if _clear_status is not None:
                _clear_status()
            super().emit(record)


def setup(level: str, fmt: str) -> None:
    handler = StatusAwareHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
