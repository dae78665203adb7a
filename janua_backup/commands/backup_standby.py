"""The steps of ``backup`` that differ on a hot standby (PostgreSQL 15+).

PostgreSQL's rules for a backup taken in recovery: ``pg_backup_stop`` returns
the last replayed position and switches no segment (a standby writes no WAL);
the backup_label says ``BACKUP FROM: standby``; recovery of such a backup ends
at the minimum recovery point of the restored ``pg_control``, which is why
``backup`` reads that file after every other one. So the stop point is the
later of the stop LSN and that minimum recovery point, and its segment is
complete only once the primary leaves it: with ``[postgres] primary_dsn`` we
ask the primary for ``pg_switch_wal()``, else we wait (the primary's
archive_timeout, or more writes) and say so in the log.

Imports ``pg`` and ``config`` only: orchestration, like the command it serves.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from janua_backup.config import Settings
from janua_backup.errors import BackupError
from janua_backup.pg import conn as pgconn
from janua_backup.pg.lowlevel import BackupStop, label_from_standby, min_recovery_end, switch_wal
from janua_backup.pg.wal import WalSegment

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)


def stop_point(conn: psycopg.Connection[Any], stop: BackupStop) -> BackupStop:
    """The stop point of a standby's backup: where its recovery ends, the minimum
    recovery point of the pg_control copied last, if that is past the stop LSN."""
    end = min_recovery_end(conn)
    return replace(stop, lsn=end) if end is not None and end > stop.lsn else stop


def close_stop_segment(settings: Settings, facts: pgconn.ServerFacts, stop: BackupStop) -> None:
    """On a standby: has the primary (``primary_dsn``) switch segments, so that the one
    holding the stop point is complete and archived now; without it, says what we wait for.

    Only once ``pg_backup_stop`` returned: the switch must come after the stop point
    (the standby's last replayed position, which the primary has already written)."""
    if not label_from_standby(stop.backup_label):
        raise BackupError(
            "the standby was promoted while the backup ran; run backup again (against the "
            "new primary, or a standby)"
        )
    name = WalSegment.before_lsn(stop.timeline, stop.lsn, facts.wal_segment_size).name
    dsn = settings.postgres.primary_dsn
    if not dsn:
        log.info(
            "backup from a standby waits for segment %s: the primary completes it at its "
            "archive_timeout or when more WAL fills it; set [postgres] primary_dsn to have "
            "janua-backup ask the primary for pg_switch_wal() instead",
            name,
        )
        return
    with pgconn.connect(dsn, setting="postgres.primary_dsn / JANUA_BACKUP_PRIMARY_DSN") as conn:
        primary = pgconn.server_facts(conn)
        if primary.system_identifier != facts.system_identifier or primary.in_recovery:
            what = "a standby" if primary.in_recovery else f"cluster {primary.system_identifier}"
            raise BackupError(
                f"postgres.primary_dsn reaches {what}, not the primary of cluster "
                f"{facts.system_identifier}; point primary_dsn at the current primary"
            )
        if primary.archive_mode == "off" and facts.archive_mode != "always":
            raise BackupError(
                "neither the primary (archive_mode off) nor this standby (archive_mode "
                f"{facts.archive_mode}) archives WAL, so this backup could never be made "
                "consistent; set archive_mode = on on the primary (or always on the standby)"
            )
        switched = switch_wal(conn)
    log.info("asked the primary to switch segments segment=%s switch_lsn=%s", name, switched)
