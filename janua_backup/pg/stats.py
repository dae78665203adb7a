"""The SQL the daemon reads: the archiver's figures and the node's role.

Owns the queries, not the metrics: it returns plain values the daemon turns
into ``metrics`` figures. Imports only ``pg.conn`` (psycopg lazily, through it).

The role is read at every call, never remembered: after a failover the same
server answers ``pg_is_in_recovery() = false`` from the moment it is promoted,
and a daemon that cached "standby" would never back up the new primary.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from janua_backup.pg import conn as pgconn

PRIMARY = "primary"
STANDBY = "standby"
ROLES = (PRIMARY, STANDBY)


@dataclass(frozen=True, slots=True)
class ArchiverRow:
    """``pg_stat_archiver``, the ``.ready`` count and the role, read on one connection."""

    role: str  # one of ROLES
    archived_count: int
    failed_count: int
    last_archived: datetime | None
    last_failed: datetime | None
    ready_segments: int | None  # None: see ready_refused
    ready_refused: str | None  # why the ready count is missing (listing needs pg_monitor)


def role_of(in_recovery: bool) -> str:
    return STANDBY if in_recovery else PRIMARY


def role(dsn: str | None) -> str:
    """``primary`` or ``standby``, as the server says now (``pg_is_in_recovery()``)."""
    with pgconn.connect(dsn) as conn:
        (in_recovery,) = pgconn.query_one(conn, "SELECT pg_is_in_recovery()")
    return role_of(bool(in_recovery))


def archiver(dsn: str | None) -> ArchiverRow:
    """``pg_stat_archiver`` and the ``.ready`` files of ``pg_wal/archive_status``."""
    with pgconn.connect(dsn) as conn:
        archived, failed, last_ok, last_failed, in_recovery = pgconn.query_one(
            conn,
            "SELECT archived_count, failed_count, last_archived_time, last_failed_time, "
            "pg_is_in_recovery() FROM pg_stat_archiver",
        )
        user, allowed = pgconn.query_one(
            conn,
            "SELECT current_user, "
            "has_function_privilege(to_regprocedure('pg_ls_archive_statusdir()'), 'EXECUTE')",
        )
        ready: int | None = None
        refused: str | None = None
        if allowed:
            (count,) = pgconn.query_one(
                conn,
                "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE right(name, 6) = '.ready'",
            )
            ready = int(count)
        elif allowed is None:
            refused = "PostgreSQL before 12 has no pg_ls_archive_statusdir()"
        else:
            refused = (
                f"role {user} may not list pg_wal/archive_status; "
                f"GRANT pg_monitor TO {user} to report them"
            )
    return ArchiverRow(
        role=role_of(bool(in_recovery)),
        archived_count=int(archived),
        failed_count=int(failed),
        last_archived=last_ok if isinstance(last_ok, datetime) else None,
        last_failed=last_failed if isinstance(last_failed, datetime) else None,
        ready_segments=ready,
        ready_refused=refused,
    )
