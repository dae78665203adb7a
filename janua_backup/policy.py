"""The policy file: when jobs run, how backups are taken, kept and verified.

Owns the frozen ``Policy`` tree and its validation; imports only ``errors`` and
the codec table of ``pipeline`` (apscheduler only inside the cron check, so a
command that never schedules never pays for it). The daemon and ``expire`` /
``verify`` receive a ``Policy``; nothing below them reads the file.

A policy is validated whole when it is loaded, so a typo fails at start-up
with one sentence naming the file, the line and the key, not at 02:00 when
the first job would have run. tomllib gives no line numbers, so ``_locate``
scans the text for the line of each table and key.

Keys left out take the built-in default (``default()``, the values of
``policies/default.toml``), except ``backup.compression`` and ``backup.level``:
left out, the codec of the configuration file applies.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from janua_backup.errors import ConfigError
from janua_backup.pipeline.compress import LEVEL_RANGES
from janua_backup.pipeline.header import CODECS

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

BACKUP_TYPES = ("full", "incr")
BACKUP_FROM = ("primary", "standby", "any")  # the nodes of a cluster where backups run
VERIFY_TARGETS = ("latest", "immediate")
JOBS = ("backup", "verify", "expire", "check")
WEEK_S = 7 * 24 * 3600
_CRON_FIELDS = ("minute", "hour", "day", "month", "day_of_week")
_CRON_RANGES = {
    "minute": "0-59",
    "hour": "0-23",
    "day": "1-31",
    "month": "1-12 or jan-dec",
    "day_of_week": "mon-sun",
}


@dataclass(frozen=True, slots=True)
class Schedule:
    """Per job, a cron expression (crontab's 5 fields) in ``timezone`` or an interval
    (``@every 30s``, ``@every 5m``, ``@every 2h``); ``None``: the job is disabled."""

    timezone: str = "UTC"
    backup: str | None = "0 2 * * *"
    verify: str | None = "0 4 * * *"
    expire: str | None = "30 5 * * *"
    check: str | None = "0 * * * *"
    misfire_grace_s: int = 3600  # a job missed by less than this (daemon down) still runs

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def jobs(self) -> tuple[tuple[str, str], ...]:
        """The enabled jobs as ``(name, cron expression)``, in ``JOBS`` order."""
        crons = (self.backup, self.verify, self.expire, self.check)
        return tuple((name, cron) for name, cron in zip(JOBS, crons, strict=True) if cron)


@dataclass(frozen=True, slots=True)
class BackupPolicy:
    type: str = "full"  # one of BACKUP_TYPES
    compression: str | None = None  # None: the configuration's codec
    level: int | None = None  # None: the codec's default level
    from_: str = "primary"  # one of BACKUP_FROM; the policy file's key is ``from``


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    recovery_window_days: float = 30.0
    min_backups: int = 2

    @property
    def window(self) -> timedelta:
        return timedelta(days=self.recovery_window_days)


@dataclass(frozen=True, slots=True)
class CheckQuery:
    """A drill query: it must succeed and, with ``min_value``, return at least that."""

    name: str
    database: str
    query: str
    min_value: int | None = None  # first column of the first row must be >= this


@dataclass(frozen=True, slots=True)
class VerifyPolicy:
    target: str = "latest"  # one of VERIFY_TARGETS: end of WAL, or first consistent point
    amcheck: bool = False
    timeout_s: float = 1800.0
    checks: tuple[CheckQuery, ...] = ()


@dataclass(frozen=True, slots=True)
class Policy:
    path: Path | None  # None: the built-in default
    schedule: Schedule = field(default_factory=Schedule)
    backup: BackupPolicy = field(default_factory=BackupPolicy)
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    verify: VerifyPolicy = field(default_factory=VerifyPolicy)


def default() -> Policy:
    """The values of ``policies/default.toml``, without its check queries and without
    a compression override: with no policy file, the configuration's codec applies."""
    return Policy(path=None)


def load(path: Path) -> Policy:
    """Read and validate a policy file; any problem is a ``ConfigError`` naming file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"policy file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise ConfigError(f"cannot read policy file {path}: {reason}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"policy file {path} is not valid TOML: {exc}") from exc
    source = _Source(path, _locate(text))
    sections = ("schedule", "backup", "retention", "verify")
    for name in data:
        if name not in sections:
            raise source.error(name, f"unknown section [{name}] (known: {', '.join(sections)})")
    return Policy(
        path=path,
        schedule=_schedule(source.table(data, "schedule", _keys(Schedule))),
        backup=_backup(source.table(data, "backup", _keys(BackupPolicy))),
        retention=_retention(source.table(data, "retention", _keys(RetentionPolicy))),
        verify=_verify(source.table(data, "verify", _keys(VerifyPolicy))),
    )


def _keys(cls: type[DataclassInstance]) -> tuple[str, ...]:
    """The file's keys of a table: the field names, ``from_`` written ``from``."""
    return tuple(f.name.rstrip("_") for f in fields(cls))


def _schedule(table: _Table) -> Schedule:
    base = Schedule()
    timezone = table.text("timezone", base.timezone)
    try:
        zone = ZoneInfo(timezone)
    except (KeyError, ValueError, OSError):
        raise table.error(
            "timezone",
            f"schedule.timezone {timezone!r} is not a known time zone "
            "(use an IANA name like 'UTC' or 'Europe/Paris')",
        ) from None
    crons: dict[str, str | None] = {}
    for job in JOBS:
        expr = table.text(job, getattr(base, job) or "").strip()
        if expr.startswith("@"):
            reason = interval_problem(expr)
            if reason is not None:
                raise table.error(
                    job, f"schedule.{job} {expr!r} is not a valid interval ({reason})"
                )
        elif expr:
            reason = cron_problem(expr, zone)
            if reason is not None:
                raise table.error(
                    job, f"schedule.{job} {expr!r} is not a valid cron expression ({reason})"
                )
        crons[job] = expr or None
    # A job missed by more than a week (the daemon was down) is better skipped than run late.
    grace = table.integer("misfire_grace_s", base.misfire_grace_s, minimum=1, maximum=WEEK_S)
    return Schedule(
        timezone=timezone,
        backup=crons["backup"],
        verify=crons["verify"],
        expire=crons["expire"],
        check=crons["check"],
        misfire_grace_s=grace,
    )


_EVERY_RE = re.compile(r"@every\s+([0-9]+)\s*([smh])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}


def interval_s(expr: str) -> int | None:
    """The seconds of an ``@every N{s,m,h}`` schedule; ``None`` for anything else (cron)."""
    match = _EVERY_RE.fullmatch(expr.strip())
    if match is None:
        return None
    return int(match[1]) * _UNIT_S[match[2]]


def interval_problem(expr: str) -> str | None:
    """Why ``expr``, which starts with ``@``, is not an ``@every`` interval the daemon runs.

    Intervals count from the Unix epoch, so daemons on every node of a cluster fire
    together (``daemon.turns``): they suit tests and frequent jobs, cron expressions
    suit "every night at 02:00".
    """
    seconds = interval_s(expr)
    if seconds is None:
        return "write @every and a whole number with s, m or h: @every 30s, @every 5m, @every 2h"
    if seconds == 0:
        return "the interval must be at least 1s"
    return None


def cron_problem(expr: str, zone: ZoneInfo) -> str | None:
    """Why ``expr`` is not a 5-field crontab expression APScheduler 3 reads as cron does."""
    from apscheduler.triggers.cron import CronTrigger

    parts = expr.split()
    if len(parts) != len(_CRON_FIELDS):
        return (
            f"it has {len(parts)} fields; crontab has 5: minute hour day-of-month month day-of-week"
        )
    weekday = re.sub(r"/[0-9]+", "", parts[4])
    if not re.fullmatch(r"[A-Za-z0-9*,\-]+", weekday):
        return f"day of week {parts[4]!r} must be names, ranges, lists or *"
    if re.search(r"[0-9]", weekday):
        # APScheduler 3 counts weekdays from 0 = Monday, crontab from 0 = Sunday:
        # a number would silently run on the wrong day.
        return "write days of the week as names (mon-sun): numbers differ between cron tools"
    for name, value in zip(_CRON_FIELDS, parts, strict=True):
        try:
            CronTrigger(**{name: value}, timezone=zone)
        except ValueError as exc:
            reason = str(exc)
            if "higher than the maximum" in reason or "lower than the minimum" in reason:
                return f"{name.replace('_', ' ')} must be {_CRON_RANGES[name]}"
            return f"{name.replace('_', ' ')} {value!r}: {reason}"
    try:
        CronTrigger.from_crontab(expr, timezone=zone)
    except ValueError as exc:
        return str(exc)
    return None


def _backup(table: _Table) -> BackupPolicy:
    kind = table.choice("type", "full", BACKUP_TYPES)
    where = table.choice("from", "primary", BACKUP_FROM)
    codec = table.choice("compression", "", tuple(CODECS)) or None
    level: int | None = None
    if table.has("level"):
        level = table.integer("level", 0)
        if codec is None:
            raise table.error(
                "level", "backup.level needs backup.compression (a level belongs to a codec)"
            )
        if codec == "none":
            raise table.error("level", "backup.level is set but compression is 'none'")
        low, high = LEVEL_RANGES[codec]
        if not low <= level <= high:
            raise table.error("level", f"backup.level {level} must be {low}-{high} for {codec}")
    return BackupPolicy(type=kind, compression=codec, level=level, from_=where)


def _retention(table: _Table) -> RetentionPolicy:
    base = RetentionPolicy()
    days = table.number("recovery_window_days", base.recovery_window_days)
    if days < 0:
        raise table.error(
            "recovery_window_days",
            f"retention.recovery_window_days {days:g} must be 0 or more (days to keep restorable)",
        )
    if days > 36500:
        raise table.error(
            "recovery_window_days", f"retention.recovery_window_days {days:g} is over 100 years"
        )
    # 10000 backups is decades of nightly ones: a larger number is a typo, not a policy.
    minimum = table.integer("min_backups", base.min_backups, minimum=1, maximum=10_000)
    return RetentionPolicy(recovery_window_days=days, min_backups=minimum)


def _verify(table: _Table) -> VerifyPolicy:
    base = VerifyPolicy()
    target = table.choice("target", base.target, VERIFY_TARGETS)
    amcheck = table.flag("amcheck", base.amcheck)
    timeout = table.number("timeout_s", base.timeout_s)
    # A drill that replays for over a week would never finish before the next one starts.
    if not 0 < timeout <= WEEK_S:
        raise table.error(
            "timeout_s", f"verify.timeout_s {timeout:g} must be more than 0 and at most {WEEK_S}"
        )
    checks: list[CheckQuery] = []
    for check_table in table.tables("checks", _CHECK_KEYS):
        check = _check(check_table)
        if any(c.name == check.name for c in checks):
            raise check_table.error(
                "name", f"{check_table.prefix}.name {check.name!r} names another check too"
            )
        checks.append(check)
    return VerifyPolicy(target=target, amcheck=amcheck, timeout_s=timeout, checks=tuple(checks))


_CHECK_KEYS = ("name", "database", "query", "min")


def _check(table: _Table) -> CheckQuery:
    values: dict[str, str] = {}
    for key in ("name", "database", "query"):
        if not table.has(key):
            raise table.source.error(
                table.prefix,
                f"{table.prefix} has no {key} (each [[verify.checks]] needs name, database "
                "and query)",
            )
        values[key] = table.text(key, "")
        if not values[key].strip():
            raise table.error(key, f"{table.prefix}.{key} is empty")
    minimum = table.integer("min", 0) if table.has("min") else None
    return CheckQuery(min_value=minimum, **values)


# --- reading tables with locations ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Source:
    path: Path
    lines: dict[str, int]  # "schedule", "schedule.backup", "verify.checks[0].min" -> line

    def where(self, key: str) -> str:
        """``file line N`` for ``key`` or its nearest located parent; the file alone if none."""
        while key not in self.lines:
            parent = re.sub(r"(\.[^.]*|\[[0-9]+\])$", "", key)
            if parent == key:
                return str(self.path)
            key = parent
        return f"{self.path} line {self.lines[key]}"

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where(key)}: {message}")

    def table(self, data: dict[str, object], name: str, known: tuple[str, ...]) -> _Table:
        values = data.get(name, {})
        if not isinstance(values, dict):
            raise self.error(name, f"{name} must be a table ([{name}]), not {_show(values)}")
        return _Table(self, name, values, known)


class _Table:
    """One TOML table's values, read key by key with type checks and located errors."""

    def __init__(
        self, source: _Source, prefix: str, values: dict[str, object], known: tuple[str, ...]
    ) -> None:
        self.source = source
        self.prefix = prefix
        self.values = values
        for key in values:
            if key not in known:
                raise self.error(
                    key,
                    f"unknown key {prefix}.{key} (known in {_section(prefix)}: "
                    f"{', '.join(sorted(known))})",
                )

    def error(self, key: str, message: str) -> ConfigError:
        return self.source.error(f"{self.prefix}.{key}", message)

    def has(self, key: str) -> bool:
        return key in self.values

    def _wrong(self, key: str, wanted: str) -> ConfigError:
        value = self.values[key]
        return self.error(key, f"{self.prefix}.{key} must be {wanted}, not {_show(value)}")

    def text(self, key: str, default: str) -> str:
        value = self.values.get(key, default)
        if not isinstance(value, str):
            raise self._wrong(key, "a string")
        return value

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(key, default)
        if key in self.values and value not in allowed:
            raise self.error(
                key, f"{self.prefix}.{key} {value!r} must be one of {', '.join(allowed)}"
            )
        return value

    def integer(
        self, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self.values.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(key, "an integer")
        if minimum is not None and value < minimum:
            raise self.error(key, f"{self.prefix}.{key} {value} must be {minimum} or more")
        if maximum is not None and value > maximum:
            raise self.error(key, f"{self.prefix}.{key} {value} must be {maximum} or less")
        return value

    def number(self, key: str, default: float) -> float:
        value = self.values.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong(key, "a number")
        if not math.isfinite(value):
            raise self._wrong(key, "a finite number")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.values.get(key, default)
        if not isinstance(value, bool):
            raise self._wrong(key, "true or false")
        return value

    def tables(self, key: str, known: tuple[str, ...]) -> list[_Table]:
        """An array of tables (``[[verify.checks]]``), each checked against ``known``."""
        items = self.values.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise self._wrong(key, f"an array of tables ([[{self.prefix}.{key}]])")
        return [
            _Table(self.source, f"{self.prefix}.{key}[{index}]", item, known)
            for index, item in enumerate(items)
        ]


def _section(prefix: str) -> str:
    return f"[[{prefix.split('[')[0]}]]" if "[" in prefix else f"[{prefix}]"


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


_HEADER_RE = re.compile(r"\s*(\[\[?)([^\[\]]+)\]\]?\s*(#.*)?")
_KEY_RE = re.compile(r"\s*([A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')\s*[.=]")


def _locate(text: str) -> dict[str, int]:
    """The line of each table header and key, named as the validation names them.

    Good enough for files people write: bare and quoted keys, dotted keys (located
    at their first part), arrays of tables numbered from 0, multi-line strings
    skipped so a query line that looks like ``key = value`` is not taken for one.
    """
    lines: dict[str, int] = {}
    table = ""
    arrays: dict[str, int] = {}
    open_quote: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if open_quote is not None:
            if raw.count(open_quote) % 2 == 1:
                open_quote = None
            continue
        header = _HEADER_RE.fullmatch(raw)
        if header is not None:
            name = ".".join(part.strip().strip("\"'") for part in header[2].split("."))
            if header[1] == "[[":
                arrays[name] = arrays.get(name, -1) + 1
                name = f"{name}[{arrays[name]}]"
            table = name
            lines.setdefault(table, number)
            continue
        key = _KEY_RE.match(raw)
        if key is None:
            continue
        name = key[1].strip("\"'")
        lines.setdefault(f"{table}.{name}" if table else name, number)
        rest = raw[key.end() :]
        open_quote = next((q for q in ('"""', "'''") if rest.count(q) % 2 == 1), None)
    return lines
