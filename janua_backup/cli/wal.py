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


@cli.command("archive-command")
@click.option(
    "--value",
    "value_only",
    is_flag=True,
    help="Print only the command, for ALTER SYSTEM SET archive_command or patroni.yml.",
)
def archive_command(value_only: bool) -> None:
    """Print the archive_command line for postgresql.conf, for this config.

    With --value only the command itself, for ALTER SYSTEM or patroni.yml.

    With [wal] archive_async = true it starts with a shell test that exits 0
    for a segment the background worker has already stored, without starting
    Python; everything else runs wal-push %p.
    """
    from janua_backup.commands.common import archive_command as command
    from janua_backup.errors import ConfigError
    from janua_backup.pg.recovery import quote_setting

    settings = context().settings()
    if settings.config_path is None:
        raise ConfigError(
            "archive-command needs --config (or JANUA_BACKUP_CONFIG): PostgreSQL runs "
            "archive_command without your environment, so its settings must come from a file"
        )
    value = command(settings)
    click.echo(value if value_only else f"archive_command = {quote_setting(value)}")


@cli.command("wal-push-worker", hidden=True)
def wal_push_worker() -> None:
    """Push every ready WAL segment ahead of the archiver ([wal] archive_async = true).

    Started detached by wal-push; its stderr goes to <spool>/archive/worker.log.
    Exits 0, or 1 after an error (SIGTERM and SIGINT stop it with 0): orphaned,
    it may be reaped by a postmaster running as PID 1 (containers), which takes
    any other status of a child it does not know for a crashed backend and
    restarts the server.
    """
    import signal

    from janua_backup.commands import wal_push_worker as command

    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, lambda *_: sys.exit(0))
    try:
        command.run(context().settings())
    except JanuaError as error:
        click.echo(f"janua-backup: error: wal-push-worker: {error.message}", err=True)
        sys.exit(1)


@cli.command("wal-fetch")
@click.argument("wal_name")
@click.argument("destination")
def wal_fetch(wal_name: str, destination: str) -> None:
    """Fetch one WAL file for recovery (restore_command: wal-fetch %f %p).

    Exits 1 only when the archive confirmed it does not have the file. If
    storage cannot be read, it retries, then exits 128 so PostgreSQL stops
    recovery instead of ending it early (a standby is told "not yet"). A file
    that fails its checks (checksum, key, or a segment whose page header is not
    the one its name gives) is read three times at most, then exits 128.
    """
    from pathlib import Path

    from janua_backup.commands import wal_fetch as command

    pgdata = Path(str(context().overrides["postgres"].get("pgdata") or "."))
    try:
        result = command.run(context().settings(), wal_name, destination, pgdata=pgdata)
    except Exception as error:
        message = error.message if isinstance(error, JanuaError) else repr(error)
        standby = command.in_standby(pgdata)
        click.echo(f"janua-backup: error: wal-fetch {wal_name}: {message}", err=True)
        sys.exit(WAL_FETCH_NOT_FOUND_EXIT if standby else WAL_FETCH_FATAL_EXIT)
    if not result.found:
        sys.exit(WAL_FETCH_NOT_FOUND_EXIT)


@cli.command("wal-prefetch", hidden=True)
@click.argument("wal_name")
@click.option("--lock-fd", type=int, help="The spool lock, taken by the wal-fetch that starts us.")
def wal_prefetch(wal_name: str, lock_fd: int | None) -> None:
    """Keep the segments after WAL_NAME downloaded into the prefetch spool.

    Started detached by wal-fetch ([wal] prefetch_segments); its stderr goes
    to <spool>/prefetch/prefetch.log. Exits when recovery is over, always
    with status 0: orphaned, it may be reaped by a postmaster running as
    PID 1 (containers), which takes any status but 0 or 1 of a child it does
    not know for a crashed backend and restarts the server.
    """
    import signal
    from pathlib import Path

    from janua_backup.commands import wal_prefetch as command

    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, lambda *_: sys.exit(0))
    pgdata = Path(str(context().overrides["postgres"].get("pgdata") or "."))
    try:
        command.run(context().settings(), wal_name, pgdata=pgdata, lock_fd=lock_fd)
    except JanuaError as error:
        click.echo(f"janua-backup: error: wal-prefetch {wal_name}: {error.message}", err=True)
