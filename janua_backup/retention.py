"""Retention as a pure rule: which backups to keep, and which WAL is no longer needed.

No storage, no I/O, no clock: the caller passes the catalog and ``now``, and
``commands.expire`` deletes what this module names. Imports only ``pg.wal``
(names and LSNs) and ``errors``. Being pure, the rule is tested with random
backup sets rather than with a repository.

The promise: every point of the recovery window ``[now - window, now]`` from
the first backup on stays restorable. A point is restorable from a backup that
was consistent (stopped) at or before it, plus the WAL from that backup's
start up to the point. So the rule keeps every backup that stopped inside the
window, the newest one that stopped before it (it reaches the window's first
moment), and then the WAL from the oldest kept backup's start onwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from janua_backup.errors import InputError
from janua_backup.pg.wal import Lsn, WalFileKind, WalSegment, check_segment_size, classify

PINNED = "pinned"
INSIDE_WINDOW = "inside the window"
BEFORE_WINDOW = "newest before the window"
MINIMUM_COUNT = "minimum count"
NEEDED_BY = "needed by {}"  # formatted with the id of the kept backup that depends on it


@dataclass(frozen=True, slots=True)
class BackupRef:
    """What retention needs to know of one committed backup."""

    backup_id: str
    start_time: datetime
    stop_time: datetime  # the backup is consistent, so restorable, from here on
    start_lsn: Lsn
    timeline: int
    pinned: bool = False
    depends_on: str | None = None  # incremental: the backup this one is applied on top of


@dataclass(frozen=True, slots=True)
class Decision:
    """Ids to keep and to expire (each oldest first), and why each kept one stays."""

    keep: tuple[str, ...]
    expire: tuple[str, ...]
    reasons: dict[str, str]  # kept id -> one of the reason strings above


def decide(
    backups: Sequence[BackupRef], now: datetime, window: timedelta, min_backups: int
) -> Decision:
    """Apply the retention rule; see the module docstring for the promise it keeps.

    Kept: pinned backups; every backup that stopped after ``now - window``; the
    newest that stopped at or before it; the newest ``min_backups``; and, for
    each of those, the chain of backups it depends on. Everything else expires.
    A backup kept for several reasons is given the first, in that order.
    """
    _check_aware(now, "now")
    if window < timedelta(0):
        raise ValueError(f"the recovery window {window} is negative")
    if min_backups < 0:
        raise ValueError(f"min_backups {min_backups} is negative")
    by_id = _index(backups)
    # Oldest first; the id breaks ties so that the decision never depends on input order.
    ordered = sorted(backups, key=lambda b: (b.stop_time, b.start_time, b.backup_id))
    cutoff = now - window
    reasons: dict[str, str] = {}
    for backup in ordered:
        if backup.pinned:
            reasons.setdefault(backup.backup_id, PINNED)
        if backup.stop_time > cutoff:
            reasons.setdefault(backup.backup_id, INSIDE_WINDOW)
    before = [b for b in ordered if b.stop_time <= cutoff]
    if before:
        reasons.setdefault(before[-1].backup_id, BEFORE_WINDOW)
    for backup in ordered[len(ordered) - min(min_backups, len(ordered)) :]:
        reasons.setdefault(backup.backup_id, MINIMUM_COUNT)
    for backup_id in list(reasons):
        _keep_chain(by_id, backup_id, reasons)
    keep = tuple(b.backup_id for b in ordered if b.backup_id in reasons)
    expire = tuple(b.backup_id for b in ordered if b.backup_id not in reasons)
    ordered_reasons = {backup_id: reasons[backup_id] for backup_id in keep}
    return Decision(keep=keep, expire=expire, reasons=ordered_reasons)


def _index(backups: Sequence[BackupRef]) -> dict[str, BackupRef]:
    by_id: dict[str, BackupRef] = {}
    for backup in backups:
        if backup.backup_id in by_id:
            raise ValueError(f"backup {backup.backup_id} is listed twice")
        _check_aware(backup.start_time, f"start time of {backup.backup_id}")
        _check_aware(backup.stop_time, f"stop time of {backup.backup_id}")
        by_id[backup.backup_id] = backup
    for backup in backups:
        if backup.depends_on is not None and backup.depends_on not in by_id:
            raise ValueError(
                f"backup {backup.backup_id} depends on {backup.depends_on}, "
                "which is not in the list"
            )
    return by_id


def _keep_chain(by_id: dict[str, BackupRef], backup_id: str, reasons: dict[str, str]) -> None:
    """Keep every backup ``backup_id`` is applied on top of, down to its full backup."""
    seen = {backup_id}
    current = by_id[backup_id]
    while current.depends_on is not None:
        if current.depends_on in seen:
            raise ValueError(f"backups {sorted(seen)} depend on each other in a cycle")
        seen.add(current.depends_on)
        reasons.setdefault(current.depends_on, NEEDED_BY.format(current.backup_id))
        current = by_id[current.depends_on]


def _check_aware(moment: datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} ({moment.isoformat()}) has no time zone; pass UTC times")


def wal_to_delete(
    archived_names: Iterable[str], kept: Sequence[BackupRef], segment_size: int
) -> list[str]:
    """The archived WAL files no kept backup can need, sorted by name.

    The horizon is the smallest start segment number among ``kept``. Deleted:
    segments, ``.partial`` segments and ``.backup`` history files whose segment
    number is below it, on every timeline. Never deleted: ``.history`` files
    (tiny, and recovery reads them to follow any timeline switch), names that
    are not WAL files, and anything at all when nothing is kept.

    Why one horizon is safe across timelines: a segment number is a position in
    the single LSN space all timelines share (a child timeline begins at its
    parent's switch LSN), so a segment numbered below the horizon holds only
    WAL from before every kept backup's start LSN, whichever timeline wrote it.
    Every kept backup starts at or after the horizon, and recovery from a
    backup never reads a segment before the one holding its start LSN: that is
    the redo point of the backup's checkpoint, and the checkpoint record itself
    lies at or after it. Segments at or above the horizon all stay, on every
    timeline, so whichever timeline path a restore follows, its WAL is there.
    """
    size = check_segment_size(segment_size)
    if not kept:
        return []
    horizon = min(backup.start_lsn.value // size for backup in kept)
    doomed: list[str] = []
    for name in archived_names:
        try:
            kind = classify(name)
        except InputError:
            continue  # not a WAL file: never delete what we cannot name
        if kind is WalFileKind.HISTORY:
            continue
        # A segment, its .partial, and <segment>.<offset>.backup all start with the
        # segment name; parsing it with the wrong segment size raises, not guesses.
        if WalSegment.parse(name[:24], size).number < horizon:
            doomed.append(name)
    return sorted(doomed)
