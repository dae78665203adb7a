"""Turns restore's flags into a checked request: exactly one target, a zone-safe time.

Refusals here happen before the repository is even opened.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, cast

from janua_backup.commands.restore import RestoreRequest
from janua_backup.errors import InputError
from janua_backup.pg import recovery
from janua_backup.pg.wal import Lsn
from janua_backup.repository import layout
from janua_backup.repository.select import Target

Action = Literal["promote", "pause", "shutdown"]
MAX_RESTORE_POINT_BYTES = 63  # MAXFNAMELEN - 1: PostgreSQL refuses a longer name at start-up


def build_request(
    *,
    pgdata: str,
    target_time: str | None,
    timezone: str | None,
    target_lsn: str | None,
    target_xid: str | None,
    target_name: str | None,
    immediate: bool,
    exclusive: bool,
    action: str,
    timeline: str | None,
    backup_id: str | None,
    standby: bool,
    delta: bool = False,
    archive_mode: str | None = None,
    archive: bool = False,
    latest: bool = False,
) -> RestoreRequest:
    options = {
        "--target-time": target_time,
        "--timezone": timezone,
        "--target-lsn": target_lsn,
        "--target-xid": target_xid,
        "--target-name": target_name,
    }
    for option, text in options.items():
        # An empty value (an unset shell variable: --target-time "$T") must not fall
        # through to "no target", which replays to the end of the archive.
        if text is not None and not text.strip():
            raise InputError(f"{option} is empty; give a value or leave the option out")
    given = {
        k: v
        for k, v in {
            "--target-time": target_time,
            "--target-lsn": target_lsn,
            "--target-xid": target_xid,
            "--target-name": target_name,
            "--target immediate": "immediate" if immediate else None,
            "--target latest": "latest" if latest else None,
        }.items()
        if v
    }
    if len(given) > 1:
        raise InputError(f"give one recovery target, not {' and '.join(given)}")
    if timezone and not target_time:
        raise InputError("--timezone only applies to --target-time")
    if backup_id is not None:
        layout.check_backup_id(backup_id)
    if archive_mode is not None and archive_mode not in recovery.ARCHIVE_MODES:
        raise InputError(f"--archive-mode {archive_mode!r} must be off, on or preserve")
    if archive and archive_mode not in (None, "preserve"):
        raise InputError(f"--archive means --archive-mode preserve, not {archive_mode}; give one")
    if archive:
        archive_mode = "preserve"
    target, value = _target(target_time, timezone, target_lsn, target_xid, target_name, immediate)
    requested_tli = _timeline(timeline)
    rt = recovery.RecoveryTarget(
        kind=cast(Literal["time", "lsn", "xid", "name", "immediate", "latest"], target.kind),
        value=value,
        inclusive=not exclusive,
        action=cast(Action, action),
        timeline=timeline,
    )
    return RestoreRequest(
        pgdata=Path(pgdata).absolute(),
        target=target,
        recovery_target=rt,
        backup_id=backup_id,
        standby=standby,
        requested_timeline=requested_tli,
        delta=delta,
        archive_mode=cast(recovery.ArchiveMode | None, archive_mode),
    )


def _target(
    target_time: str | None,
    timezone: str | None,
    target_lsn: str | None,
    target_xid: str | None,
    target_name: str | None,
    immediate: bool,
) -> tuple[Target, str | None]:
    if target_time:
        when = recovery.parse_target_time(target_time, timezone=timezone)
        return Target("time", time=when, text=target_time), recovery.format_pg_time(when)
    if target_lsn:
        lsn = Lsn.parse(target_lsn)
        return Target("lsn", lsn=lsn, text=target_lsn), str(lsn)
    if target_xid:
        # PostgreSQL takes a 32-bit xid or an epoch-qualified 64-bit one; str.isdigit
        # would let other scripts' digits through, which it refuses at start-up.
        if not re.fullmatch(r"[0-9]{1,20}", target_xid) or int(target_xid) >= 1 << 64:
            raise InputError(f"--target-xid {target_xid!r} must be a transaction id (a number)")
        return Target("xid", text=target_xid), target_xid
    if target_name:
        if len(target_name.encode()) > MAX_RESTORE_POINT_BYTES:
            raise InputError(
                f"--target-name is longer than {MAX_RESTORE_POINT_BYTES} bytes, "
                "so no restore point can have it (pg_create_restore_point's limit)"
            )
        return Target("name", text=target_name), target_name
    if immediate:
        return Target("immediate"), None
    return Target("latest"), None


def _timeline(timeline: str | None) -> int | None:
    if timeline is None or timeline in ("latest", "current"):
        return None
    if not timeline.isdigit() or int(timeline) < 1:
        raise InputError(f"--target-timeline {timeline!r} must be 'latest', 'current' or a number")
    return int(timeline)
