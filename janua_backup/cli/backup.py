"""``backup``, ``list``, ``info``, ``pin`` and ``unpin``."""

from __future__ import annotations

import click

from janua_backup import config
from janua_backup.cli.app import JOBS, check_backup_id, cli, context, json_option


@cli.command()
@click.option("--compression", type=click.Choice(config.CODECS), help="Override compression.codec.")
@click.option("--level", type=int, help="Compression level (gzip 1-9, zstd 1-19).")
@click.option("--jobs", type=JOBS, help="Files compressed and uploaded at once (default: cores).")
@click.option("--keep", is_flag=True, help="Pin the backup: retention never expires it.")
@click.option(
    "--type",
    "backup_type",
    type=click.Choice(["full", "incr"]),
    default="full",
    show_default=True,
    help="incr: store only files changed since the newest backup (full if there is none).",
)
@json_option
def backup(
    compression: str | None,
    level: int | None,
    jobs: int | None,
    keep: bool,
    backup_type: str,
    as_json: bool,
) -> None:
    """Take a base backup of the running cluster, full or incremental.

    An incremental reads every file, and references the newest backup's copy
    of each one whose SHA-256 is unchanged instead of storing it again.
    Only one backup or expire of a cluster runs at a time (a lock in the
    repository); a second one exits 42 naming the holder.
    """
    from janua_backup import output
    from janua_backup.commands import backup as command
    from janua_backup.memory import bound_allocator

    bound_allocator()

    settings = config.with_compression(
        context().settings(backup={"jobs": jobs}), compression, level
    )
    meter = output.ProgressMeter(0, "backup")
    result = command.run(settings, progress=meter, keep=keep, backup_type=backup_type)
    meter.close()
    output.backup(result, as_json)


@cli.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List backups: type, parent, sizes, last drill, pin and recoverable window."""
    from janua_backup.commands import info as command
    from janua_backup.output import listing

    listing.listing(command.run(context().settings()), as_json)


@cli.command()
@click.argument("backup_id", required=False, callback=check_backup_id)
@json_option
def info(backup_id: str | None, as_json: bool) -> None:
    """Show the repository (cluster, encryption, WAL, timelines) and its backups.

    With BACKUP_ID: everything about that backup (parent chain, where it was
    taken, WAL needed, window, pin reason, drills)."""
    from janua_backup import output
    from janua_backup.commands import info as command

    output.info(command.run(context().settings(), backup_id), as_json)


@cli.command()
@click.argument("backup_id", callback=check_backup_id)
@click.option("--reason", default="", help="Why it is kept (shown by info).")
def pin(backup_id: str, reason: str) -> None:
    """Keep BACKUP_ID whatever the retention policy says."""
    from janua_backup.commands import pin as command

    command.pin(context().settings(), backup_id, reason)
    click.echo(f"backup {backup_id} pinned: expire will keep it")


@cli.command()
@click.argument("backup_id", callback=check_backup_id)
def unpin(backup_id: str) -> None:
    """Let retention decide about BACKUP_ID again."""
    from janua_backup.commands import pin as command

    if command.unpin(context().settings(), backup_id):
        click.echo(f"backup {backup_id} unpinned")
    else:
        click.echo(f"backup {backup_id} was not pinned")
