"""Which backup a restore starts from, and whether the target can be reached.

Pure: manifests, their windows and a target in; a choice or a refusal out.
Each window follows the timeline path ``timelines.resolve`` gives; a backup
whose path splits into two living branches is refused (exit 4) with both
named, never followed to whichever is newer.
A target outside every window is refused with the window in the message:
recovering "somewhere near" the requested point is the silent failure this
tool exists to prevent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from janua_backup.errors import InputError, TargetOutOfRange
from janua_backup.pg.wal import Lsn
from janua_backup.repository.manifest import Manifest
from janua_backup.repository.window import Window


@dataclass(frozen=True, slots=True)
class Target:
    kind: str  # "time", "lsn", "xid", "name", "immediate" or "latest"
    time: datetime | None = None
    lsn: Lsn | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Choice:
    manifest: Manifest
    window: Window


def describe_windows(windows: Sequence[Window]) -> str:
    usable = [w for w in windows if w.restorable]
    if not usable:
        return "no backup can be restored with the WAL in the archive"
    first = min(usable, key=lambda w: w.earliest_time)
    last = max(usable, key=lambda w: w.latest_lsn or Lsn(0))
    return (
        f"the recoverable window is {_iso(first.earliest_time)} (LSN {first.earliest_lsn}) "
        f"to {_iso(last.latest_time)} (LSN {last.latest_lsn})"
    )


def _iso(value: datetime | None) -> str:
    if value is None:
        return "?"
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if value.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def choose(
    pairs: Sequence[tuple[Manifest, Window]], target: Target, backup_id: str | None = None
) -> Choice:
    if not pairs:
        raise InputError("the repository has no backups; take one with `janua-backup backup`")
    if backup_id is not None:
        pairs = [(m, w) for m, w in pairs if m.backup_id == backup_id]
        if not pairs:
            raise InputError(f"no backup {backup_id}; `janua-backup list` shows the backups")
    windows = [w for _, w in pairs]
    fits = [(m, w) for m, w in pairs if w.restorable and _reaches(w, target)]
    if fits:
        manifest, window = max(fits, key=lambda p: p[0].stop_lsn)
        if window.conflict is not None:
            # The path splits and nothing says which branch is the one to restore:
            # 'latest' here is how a side copy's rows replace production's.
            raise InputError(window.conflict.message(manifest.backup_id))
        return Choice(manifest, window)
    raise TargetOutOfRange(_refusal(target, windows, backup_id))


def _reaches(window: Window, target: Target) -> bool:
    """Whether the target is inside the window; an ambiguous path's end is not known
    until a branch is picked, so only its start counts (``choose`` then refuses)."""
    assert window.latest_lsn is not None and window.latest_time is not None
    if window.conflict is not None:
        if target.kind == "time" and target.time is not None:
            return window.earliest_time <= target.time
        if target.kind == "lsn" and target.lsn is not None:
            return window.earliest_lsn <= target.lsn
        return True
    if target.kind == "time" and target.time is not None:
        # Recovery stops before the first commit/abort stamped after the target;
        # latest_time is the last one archived (window_end), so it must be later.
        return window.earliest_time <= target.time < window.latest_time
    if target.kind == "lsn" and target.lsn is not None:
        return window.earliest_lsn <= target.lsn <= window.latest_lsn
    return True  # immediate, latest, xid and name: PostgreSQL checks xid and name itself


def _refusal(target: Target, windows: Sequence[Window], backup_id: str | None) -> str:
    which = f"backup {backup_id}" if backup_id else "any backup"
    ends = [w.latest_time for w in windows if w.restorable and w.latest_time is not None]
    if target.kind == "time" and target.time is not None and ends and target.time >= max(ends):
        last = _iso(max(ends))
        return (
            f"target time {_iso(target.time)} is not before {last}, the last commit in the "
            f"archived WAL and the end of the recoverable window of {which}; restore to the "
            f"end of the archive with `--target latest` (or no target), or pick a time "
            f"before {last}"
        )
    if target.kind == "time" and target.time is not None:
        where = f"target time {_iso(target.time)}"
    elif target.kind == "lsn":
        where = f"target LSN {target.lsn}"
    else:
        where = "this target"
    window = describe_windows(windows)
    return f"{where} cannot be reached from {which}: {window}; pick a target inside it"
