"""Shared formatting for people: UTC times, ages, sizes; and JSON for machines."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import humanize


def utc(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def age(value: datetime) -> str:
    return humanize.naturaltime(datetime.now(UTC) - value)


def size(value: int) -> str:
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
