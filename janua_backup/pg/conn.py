"""psycopg connections and the few facts janua-backup asks a running server.

psycopg is imported here and in ``lowlevel`` only, lazily, so commands that
never talk to PostgreSQL (wal-push, wal-fetch) do not pay for the import.
Every psycopg error is translated into ``PostgresError`` at this boundary.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from janua_backup.errors import PostgresError

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True, slots=True)
class ServerFacts:
    version_num: int  # e.g. 150004
    system_identifier: int
    wal_segment_size: int
    archive_mode: str
    archive_command: str
    data_directory: str
    in_recovery: bool

    @property
    def major(self) -> int:
        return self.version_num // 10000


@contextmanager
def connect(
    dsn: str | None,
    *,
    setting: str = "postgres.dsn / JANUA_BACKUP_DSN or the PGHOST/PGPORT/PGUSER variables",
) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection; libpq's PG* variables apply when ``dsn`` is empty.
    ``setting`` names where ``dsn`` came from, for the message when it fails."""
    import psycopg

    try:
        conn = psycopg.connect(dsn or "", autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PostgresError(f"cannot connect to PostgreSQL ({first}); check {setting}") from exc
    try:
        yield conn
    finally:
        conn.close()


def query_one(
    conn: psycopg.Connection[Any], sql: str, params: tuple[object, ...] = ()
) -> tuple[Any, ...]:
    import psycopg

    try:
        row = conn.execute(sql, params).fetchone()
    except psycopg.Error as exc:
        raise PostgresError(f"PostgreSQL refused a query ({exc}); query: {sql}") from exc
    if row is None:
        raise PostgresError(f"PostgreSQL returned no row for: {sql}")
    return tuple(row)


def server_facts(conn: psycopg.Connection[Any]) -> ServerFacts:
    version_num, in_recovery = query_one(
        conn, "SELECT current_setting('server_version_num')::int, pg_is_in_recovery()"
    )
    (sysid,) = query_one(conn, "SELECT system_identifier FROM pg_control_system()")
    seg_size, archive_mode, archive_command, data_directory = query_one(
        conn,
        "SELECT (SELECT setting::bigint * CASE unit WHEN 'B' THEN 1 WHEN 'MB' THEN 1048576 "
        "ELSE 1 END FROM pg_settings WHERE name = 'wal_segment_size'), "
        "current_setting('archive_mode'), current_setting('archive_command'), "
        "current_setting('data_directory')",
    )
    return ServerFacts(
        version_num=int(version_num),
        system_identifier=int(sysid),
        wal_segment_size=int(seg_size),
        archive_mode=str(archive_mode),
        archive_command=str(archive_command),
        data_directory=str(data_directory),
        in_recovery=bool(in_recovery),
    )
