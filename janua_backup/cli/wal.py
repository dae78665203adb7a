"""``wal-push`` and ``wal-fetch``: PostgreSQL's archive_command and restore_command."""

from __future__ import annotations

import sys

import click

from janua_backup.cli.app import cli, context
from janua_backup.errors import WAL_FETCH_FATAL_EXIT, WAL_FETCH_NOT_FOUND_EXIT, JanuaError


@cli.command("wal-push")
@click.argument("wal_path")
def wal_push(wal_path: str) -> None:
    """Archive one WAL file (archive_command: wal-push %p).

    Exits 0 only once the file is durably stored. A file already archived
    with the same content is success; different content is refused.
    """
    from janua_backup.commands import wal_push as command

    command.run(context().settings(), wal_path)


@cli.command("wal-fetch")
@click.argument("wal_name")
@click.argument("destination")
def wal_fetch(wal_name: str, destination: str) -> None:
    """Fetch one WAL file for recovery (restore_command: wal-fetch %f %p).

    Exits 1 only when the archive confirmed it does not have the file. If
    storage cannot be read, it retries, then exits 128 so PostgreSQL stops
    recovery instead of ending it early (a standby is told "not yet").
    """
    from pathlib import Path

    from janua_backup.commands import wal_fetch as command

    pgdata = Path(str(context().overrides["postgres"].get("pgdata") or "."))
    try:
        result = command.run(context().settings(), wal_name, destination)
    except Exception as error:
        message = error.message if isinstance(error, JanuaError) else repr(error)
        standby = command.in_standby(pgdata)
        click.echo(f"janua-backup: error: wal-fetch {wal_name}: {message}", err=True)
        sys.exit(WAL_FETCH_NOT_FOUND_EXIT if standby else WAL_FETCH_FATAL_EXIT)
    if not result.found:
        sys.exit(WAL_FETCH_NOT_FOUND_EXIT)
