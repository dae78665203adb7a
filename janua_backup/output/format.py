"""Shared formatting: one time format and one size style for people, RFC 3339 for machines.

People read ``2026-12-04 13:32:36Z`` (UTC, whole seconds) in every text output
and in text logs; JSON carries ``2026-12-04T13:32:36Z`` (RFC 3339, with the
fraction when there is one, so ordering and arithmetic stay exact). Sizes are
binary units with one spelling of the unit: ``0 B``, ``512 B``, ``1.5 MiB``.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import humanize

HUMAN_TIME = "%Y-%m-%d %H:%M:%SZ"


def utc(value: datetime | None, *, exact: bool = False) -> str:
    """A time for people: UTC, to the second, ``Z`` suffix; ``-`` when unknown.
    ``exact`` keeps the microseconds when there are any (a recovery target)."""
    if value is None:
        return "-"
    u = value.astimezone(UTC)
    if exact and u.microsecond:
        return u.strftime("%Y-%m-%d %H:%M:%S.%fZ")
    return u.strftime(HUMAN_TIME)


def rfc3339(value: datetime | None) -> str | None:
    """A time for machines: RFC 3339 in UTC with ``Z``; fractional seconds kept when set."""
    if value is None:
        return None
    u = value.astimezone(UTC)
    return u.isoformat(timespec="microseconds" if u.microsecond else "seconds").replace(
        "+00:00", "Z"
    )


def age(value: datetime) -> str:
    return humanize.naturaltime(datetime.now(UTC) - value)


def size(value: int) -> str:
    """Binary units; below 1 KiB ``N B`` (humanize says ``0 Bytes``, beside ``MiB``)."""
    if -1024 < value < 1024:
        return f"{value} B"
    return humanize.naturalsize(value, binary=True)


FORMAT_VERSION = 1
"""The shape of every ``--json`` output; raised only when a change would break a
reader (a field removed, renamed or changing type), never for a field added."""


def emit_json(data: dict[str, Any]) -> None:
    """One JSON object on stdout, ``format_version`` first. 64-bit numbers that a
    JSON reader may hold as a double (jq does) go out as strings: the system
    identifier as decimal, LSNs as ``X/Y``."""
    body = {"format_version": FORMAT_VERSION, **data}
    sys.stdout.write(json.dumps(body, indent=2, default=str) + "\n")
