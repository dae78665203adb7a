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


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
