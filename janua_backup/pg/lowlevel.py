"""The non-exclusive low-level backup API on one session held open.

``pg_backup_start`` and ``pg_backup_stop`` must run on the same connection,
and that connection must stay open for the whole copy: if it drops, PostgreSQL
aborts the backup (which is what we want if janua-backup dies). PostgreSQL 15
renamed the functions; 13 and 14 use ``pg_start_backup(label, fast, false)``.

On a hot standby the same calls work in recovery; PostgreSQL then writes
``BACKUP FROM: standby`` into the backup_label, returns the last replayed
position as the stop LSN, and switches no WAL segment (a standby writes no WAL):
the segment holding the stop LSN is complete only once the primary leaves it,
which ``switch_wal`` asks the primary for.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from janua_backup.errors import PostgresError
from janua_backup.pg.conn import query_one
from janua_backup.pg.wal import Lsn

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True, slots=True)
class BackupStart:
    lsn: Lsn
    time: datetime


@dataclass(frozen=True, slots=True)
class BackupStop:
    lsn: Lsn
    time: datetime
    backup_label: str
    tablespace_map: str
    timeline: int


class LowLevelBackup:
    """One base backup in progress on ``conn`` (which the caller keeps open)."""

    def __init__(self, conn: psycopg.Connection[Any], version_num: int) -> None:
        self._conn = conn
        self._v15 = version_num >= 150000
        self._started = False

    def start(self, label: str, *, fast: bool = True) -> BackupStart:
        if self._v15:
            sql = "SELECT pg_backup_start(%s, %s)::text, now()"
        else:
            sql = "SELECT pg_start_backup(%s, %s, false)::text, now()"
        lsn, now = query_one(self._conn, sql, (label, fast))
        self._started = True
        return BackupStart(lsn=Lsn.parse(lsn), time=now.astimezone(UTC))

    def stop(self, *, wait_for_archive: bool = True, timeout_s: float = 0) -> BackupStop:
        """Ends the backup; with ``wait_for_archive`` PostgreSQL returns only once
        the segment holding the stop LSN has been archived (archive_mode on).

        PostgreSQL waits for the archiver without limit; ``timeout_s`` bounds
        the wait with statement_timeout (0: no bound).
        """
        query_one(
            self._conn,
            "SELECT set_config('statement_timeout', %s, false)",
            (str(int(timeout_s * 1000)),),
        )
        if self._v15:
            sql = "SELECT lsn::text, labelfile, spcmapfile, now() FROM pg_backup_stop(%s)"
        else:
            sql = "SELECT lsn::text, labelfile, spcmapfile, now() FROM pg_stop_backup(false, %s)"
        lsn, label, spcmap, now = query_one(self._conn, sql, (wait_for_archive,))
        self._started = False
        return BackupStop(
            lsn=Lsn.parse(lsn),
            time=now.astimezone(UTC),
            backup_label=str(label),
            tablespace_map=str(spcmap or ""),
            timeline=label_timeline(str(label)),
        )

    def abort(self) -> None:
        """Best effort: ends a started backup without waiting for the archive."""
        if self._started:
            with contextlib.suppress(PostgresError):  # closing the session aborts it anyway
                self.stop(wait_for_archive=False)


def label_from_standby(label: str) -> bool:
    """Whether PostgreSQL took the backup in recovery (its ``BACKUP FROM`` line)."""
    return re.search(r"^BACKUP FROM: standby$", label, re.MULTILINE) is not None


def min_recovery_end(conn: psycopg.Connection[Any]) -> Lsn | None:
    """A standby's minimum recovery point as its pg_control holds it now (None on a
    primary). Recovery of a standby's backup ends at the one in the copied pg_control,
    which can be one record past the stop LSN (the record being replayed when the
    control file was written); the live value is at least that."""
    (lsn,) = query_one(conn, "SELECT min_recovery_end_lsn::text FROM pg_control_recovery()")
    found = Lsn.parse(lsn)
    return found if found.value else None


def switch_wal(conn: psycopg.Connection[Any]) -> Lsn:
    """``pg_switch_wal()`` on a primary: closes its current segment, so that a
    standby's backup can end without waiting for archive_timeout or more writes."""
    (lsn,) = query_one(conn, "SELECT pg_switch_wal()::text")
    return Lsn.parse(lsn)


def label_timeline(label: str) -> int:
    match = re.search(r"^START TIMELINE: (\d+)$", label, re.MULTILINE)
    if match is None:
        raise PostgresError("backup_label from PostgreSQL has no START TIMELINE line")
    return int(match.group(1))


def archiver_failures(conn: psycopg.Connection[Any]) -> tuple[int, str | None]:
    """``pg_stat_archiver``'s failed_count and last_failed_wal: a backup waiting for its
    stop segment reads them to tell "archiving fails" from "archiving is slow"."""
    count, last = query_one(conn, "SELECT failed_count, last_failed_wal FROM pg_stat_archiver")
    return int(count), (str(last) if last is not None else None)

