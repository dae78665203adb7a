"""Render, then write, the settings and signal file that make a restored cluster recover.

Owns PostgreSQL's recovery vocabulary (``recovery_target_*``, ``restore_command``,
``recovery.signal`` / ``standby.signal``), the GUC file quoting rules and the
parsing of a target time typed by a person. Nothing of storage, pipeline or
psycopg. Times are handed to PostgreSQL as ``YYYY-MM-DD HH:MM:SS.ffffff+00``:
an explicit offset makes them mean the same instant whatever the server's
``TimeZone`` and ``DateStyle``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import timezone as fixed_offset
from pathlib import Path
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from janua_backup.errors import InputError, RestoreError
from janua_backup.pg.wal import Lsn

TargetKind = Literal["time", "lsn", "xid", "name", "immediate", "latest"]
TargetAction = Literal["promote", "pause", "shutdown"]
# What a restore writes about archiving: "off" / "on" write that setting,
# "preserve" writes nothing, so the cluster archives as its configuration says.
ArchiveMode = Literal["off", "on", "preserve"]
ARCHIVE_MODES: tuple[ArchiveMode, ...] = get_args(ArchiveMode)
_ARCHIVE_COMMENTS = {
    "off": "# archive_mode off: a copy restored beside production must not archive its new "
    "timeline into production's repository (restore --archive-mode on lets it)",
    "on": "# archive_mode on: asked for with restore --archive-mode on",
}
AUTO_CONF = "postgresql.auto.conf"
# Every setting render_settings() may write. Earlier lines setting one of them
# (from the backed-up cluster, or an earlier restore) are commented out: two
# different recovery_target_* lines make PostgreSQL refuse to start, and a
# stale target would silently end recovery early.
RECOVERY_SETTINGS = frozenset(
    {
        "restore_command",
        "recovery_target",
        "recovery_target_lsn",
        "recovery_target_name",
        "recovery_target_time",
        "recovery_target_xid",
        "recovery_target_inclusive",
        "recovery_target_action",
        "recovery_target_timeline",
    }
)
_VALUED_KINDS = ("time", "lsn", "xid", "name")
_INCLUSIVE_KINDS = ("time", "lsn", "xid")
_SETTING_LINE_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.$]*)\s*(?:=|\s|$)")
_TIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2})"
    r"(?::([0-9]{2})(?:[.,]([0-9]{1,6}))?)?"
    r"\s*(?:([Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)"
    r"|((?i:UTC|GMT)|[A-Za-z][A-Za-z_-]*(?:/[A-Za-z0-9_+-]+)+))?"
)
_TIME_FORMS = (
    "use ISO 8601 with a date and a time, like 2026-11-25T21:43:00Z, "
    "2026-11-25 21:43:00+02:00, 2026-11-25 21:43:00 UTC or 2026-11-25 21:43:00 Europe/Paris"
)


@dataclass(frozen=True, slots=True)
class RecoveryTarget:
    """Where recovery stops; ``latest`` replays the whole archive."""

    kind: TargetKind
    value: str | None  # time already normalized by format_pg_time()
    inclusive: bool = True
    action: TargetAction = "promote"
    timeline: str | None = None  # "latest", "current" or a number

    def __post_init__(self) -> None:
        if self.kind not in get_args(TargetKind):
            raise InputError(f"unknown recovery target kind '{self.kind}'")
        if (self.kind in _VALUED_KINDS) != bool(self.value):
            need = "needs a value" if self.kind in _VALUED_KINDS else "takes no value"
            raise InputError(f"recovery target '{self.kind}' {need}")
        if self.kind == "lsn":
            Lsn.parse(self.value or "")
        elif self.kind == "xid" and not (self.value or "").isdecimal():
            raise InputError(f"transaction id '{self.value}' is not a number")
        elif self.kind == "time":
            parse_target_time(self.value or "", timezone=None)  # never a naive time
        self._check_options()

    def _check_options(self) -> None:
        if not self.inclusive and self.kind not in _INCLUSIVE_KINDS:
            raise InputError(f"a '{self.kind}' target cannot be exclusive")
        if self.action not in get_args(TargetAction):
            raise InputError(
                f"recovery target action '{self.action}' is not one of promote, pause, shutdown"
            )
        if self.kind == "latest" and self.action != "promote":
            raise InputError(
                "PostgreSQL promotes at the end of the archive; "
                "an action needs a target time, LSN, xid or name"
            )
        timeline = self.timeline
        if (
            timeline is not None
            and timeline not in ("latest", "current")
            and not (timeline.isascii() and timeline.isdecimal() and int(timeline) > 0)
        ):
            raise InputError(f"target timeline '{timeline}' is not latest, current or a number")


def quote_setting(value: str) -> str:
    """Quote ``value`` for a PostgreSQL configuration file, as ALTER SYSTEM does."""
    if any(char in value for char in "\n\r\0"):
        raise InputError("a setting value cannot contain a line break or a NUL character")
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def render_settings(
    restore_command: str,
    target: RecoveryTarget,
    *,
    archive_mode: ArchiveMode = "preserve",
    now: datetime | None = None,
) -> str:
    """The lines to append to ``postgresql.auto.conf``, headed by who wrote them and when.

    ``archive_mode`` "off" or "on" adds that setting after a comment saying why:
    ``postgresql.auto.conf`` is read after ``postgresql.conf``, so it wins over
    the ``archive_mode`` the backed-up cluster's files carry (not over a
    ``-c archive_mode=...`` on the postgres command line).
    """
    if not restore_command.strip():
        raise InputError("restore_command is empty")
    stamp = format_pg_time(now or datetime.now(UTC))
    settings: list[tuple[str, str]] = [("restore_command", restore_command)]
    if target.kind == "immediate":
        settings.append(("recovery_target", "immediate"))
    elif target.kind != "latest":
        settings.append((f"recovery_target_{target.kind}", target.value or ""))
    if not target.inclusive:
        settings.append(("recovery_target_inclusive", "false"))
    if target.kind != "latest":
        # PostgreSQL's own default is 'pause'; say what we mean.
        settings.append(("recovery_target_action", target.action))
    if target.timeline is not None:
        settings.append(("recovery_target_timeline", target.timeline))
    lines = [f"# Recovery settings written by janua-backup at {stamp}"]
    lines += [f"{name} = {quote_setting(value)}" for name, value in settings]
    if archive_mode != "preserve":
        if archive_mode not in _ARCHIVE_COMMENTS:
            raise InputError(f"archive mode '{archive_mode}' is not one of off, on, preserve")
        lines += [_ARCHIVE_COMMENTS[archive_mode], f"archive_mode = {quote_setting(archive_mode)}"]
    return "\n".join(lines) + "\n"


def _names_set(text: str) -> frozenset[str]:
    """The settings ``text`` assigns, lower case (a comment line never matches)."""
    return frozenset(
        match[1].lower() for line in text.splitlines() if (match := _SETTING_LINE_RE.match(line))
    )


def _disable_earlier(text: str, stamp: str, also: frozenset[str] = frozenset()) -> str:
    out = []
    for line in text.splitlines(keepends=True):
        match = _SETTING_LINE_RE.match(line)
        if match and match[1].lower() in RECOVERY_SETTINGS | also:
            line = f"# disabled by janua-backup at {stamp}: {line}"
        out.append(line)
    result = "".join(out)
    return result if not result or result.endswith("\n") else result + "\n"


def _write_file(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise RestoreError(f"cannot write recovery settings to {path}: {exc.strerror}") from exc


def write_recovery(pgdata: Path, settings_text: str, *, standby: bool) -> list[Path]:
    """Append ``settings_text`` to ``postgresql.auto.conf`` and create the signal file.

    The file is replaced atomically (temp file, fsync, rename, fsync of the
    directory), earlier recovery settings in it commented out. A signal file
    of the other kind is removed: PostgreSQL lets ``standby.signal`` win, so
    a stray one would turn a point-in-time restore into a standby that never
    promotes. An earlier line setting something ``settings_text`` sets too
    (``archive_mode``) is commented out as well: one live line, no guessing
    which one PostgreSQL takes. Returns the paths written.
    """
    conf = pgdata / AUTO_CONF
    temp = pgdata / (AUTO_CONF + ".tmp")  # PostgreSQL's own temp name, excluded from backups
    signal = pgdata / ("standby.signal" if standby else "recovery.signal")
    other = pgdata / ("recovery.signal" if standby else "standby.signal")
    with _writing(conf):
        try:
            mode = conf.stat().st_mode & 0o777
            old = conf.read_bytes().decode("utf-8", "surrogateescape")
        except FileNotFoundError:
            mode, old = 0o600, ""
        stamp = format_pg_time(datetime.now(UTC))
        new = _disable_earlier(old, stamp, _names_set(settings_text))
        new += settings_text.rstrip("\n") + "\n"
        _write_file(temp, new.encode("utf-8", "surrogateescape"), mode)
        os.replace(temp, conf)
    with _writing(signal):
        other.unlink(missing_ok=True)
        _write_file(signal, b"", 0o600)
        _fsync_dir(pgdata)
    return [conf, signal]


def _zone(name: str) -> tzinfo:
    if name.upper() in ("UTC", "GMT", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InputError(
            f"unknown time zone '{name}'; use an IANA name like Europe/Paris, or UTC"
        ) from exc


def _offset(text: str) -> tzinfo:
    if text in ("Z", "z"):
        return UTC
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or "0")
    if minutes >= 60:
        raise ValueError(f"offset minutes out of range in {text}")
    delta = timedelta(hours=hours, minutes=minutes)
    return fixed_offset(-delta if text[0] == "-" else delta)


def _localize(naive: datetime, text: str, zone_name: str) -> datetime:
    """``naive`` read in ``zone_name``; a wall time the zone skips or repeats is refused."""
    zone = _zone(zone_name)
    first, second = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
        raise InputError(
            f"the target time '{text}' does not exist in {zone_name} (the clocks jump "
            "over it at a daylight saving change); give an explicit offset instead"
        )
    raise InputError(
        f"the target time '{text}' happens twice in {zone_name} (the clocks go back at "
        f"a daylight saving change): at offset {_hhmm(first)} and at {_hhmm(second)}; "
        "add the offset you mean"
    )


def _hhmm(moment: datetime) -> str:
    return moment.strftime("%z")[:3] + ":" + moment.strftime("%z")[3:]


def parse_target_time(text: str, *, timezone: str | None) -> datetime:
    """A person's target time as an aware UTC datetime.

    Accepts ISO 8601 / RFC 3339 (``T`` or a space between date and time,
    ``Z`` or ``+hh:mm``/``+hhmm``/``+hh``), and a zone name after the time
    (``UTC``, ``GMT``, ``Europe/Paris``: what ``date`` and PostgreSQL print; not an
    abbreviation like ``CET``, which does not say whether summer time applies).
    A time without either is read in ``timezone`` (an IANA name, or UTC) and
    refused when none is given: the server's zone is not ours to guess.
    """
    match = _TIME_RE.fullmatch(text.strip())
    if match is None:
        raise InputError(f"the target time '{text}' is not understood; {_TIME_FORMS}")
    year, month, day, hour, minute = (int(part) for part in match.group(1, 2, 3, 4, 5))
    second, fraction, offset, named = int(match[6] or "0"), match[7] or "", match[8], match[9]
    try:
        naive = datetime(year, month, day, hour, minute, second, int(fraction.ljust(6, "0")))
        zone = _offset(offset) if offset else None
    except ValueError as exc:
        raise InputError(
            f"the target time '{text}' is not a valid date and time; {_TIME_FORMS}"
        ) from exc
    if zone is not None:
        return naive.replace(tzinfo=zone).astimezone(UTC)
    if named is not None:  # written in the text, it wins over --timezone as an offset does
        return _localize(naive, text, named).astimezone(UTC)
    if timezone is None:
        raise InputError(
            f"the target time '{text}' has no time zone; add Z or an offset like +02:00, "
            "or pass --timezone Europe/Paris"
        )
    return _localize(naive, text, timezone).astimezone(UTC)


def format_pg_time(moment: datetime) -> str:
    """``YYYY-MM-DD HH:MM:SS.ffffff+00``: one instant for PostgreSQL, whatever its settings."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InputError(f"time {moment.isoformat()} has no time zone")
    u = moment.astimezone(UTC)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d} "
        f"{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{u.microsecond:06d}+00"
    )
