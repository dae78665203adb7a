"""``restore``: a backup into an empty directory, set up for point-in-time recovery."""

from __future__ import annotations

import click

from janua_backup.cli.app import JOBS, check_backup_id, cli, context, json_option


@cli.command()
@click.option(
    "--pgdata",
    required=True,
    type=click.Path(file_okay=False),
    help="Empty or new directory to restore into (with --delta: this cluster's, stopped).",
)
@click.option("--target-time", help="Recover to this time: ISO 8601 with Z or an offset.")
@click.option("--timezone", help="Zone for a --target-time without offset, e.g. Europe/Paris.")
@click.option("--target-lsn", help="Recover to this LSN, e.g. 0/3000060.")
@click.option("--target-xid", help="Recover to this transaction id.")
@click.option("--target-name", help="Recover to this restore point (pg_create_restore_point).")
@click.option(
    "--target",
    "target_immediate",
    type=click.Choice(["latest", "immediate"]),
    help="'latest' (the default): replay all archived WAL; "
    "'immediate': stop as soon as the backup is consistent.",
)
@click.option("--target-exclusive", is_flag=True, help="Stop just before the target, not after.")
@click.option(
    "--target-action",
    default="promote",
    show_default=True,
    type=click.Choice(["promote", "pause", "shutdown"]),
)
@click.option("--target-timeline", help="'latest' (default), 'current' or a timeline number.")
@click.option(
    "--backup-id",
    callback=check_backup_id,
    help="Restore this backup instead of the best one for the target.",
)
@click.option(
    "--standby",
    is_flag=True,
    help="Write standby.signal (build a replica). Outside postgres.pgdata archiving is off "
    "as for any copy: give --archive-mode preserve for a replica that may be promoted.",
)
@click.option(
    "--archive-mode",
    type=click.Choice(["off", "on", "preserve"]),
    help="What the restored cluster does about archiving: off (default outside "
    "postgres.pgdata: a copy must not archive into this repository), on, or preserve "
    "(write nothing; default into postgres.pgdata).",
)
@click.option("--archive", is_flag=True, help="Short for --archive-mode preserve.")
@click.option("--jobs", type=JOBS, help="Objects fetched at once (default: cores).")
@click.option(
    "--delta",
    is_flag=True,
    help="Reuse files of a stopped data directory of the same cluster whose SHA-256 matches; "
    "fetch only the rest and remove what the backup does not have.",
)
@json_option
def restore(
    pgdata: str,
    target_time: str | None,
    timezone: str | None,
    target_lsn: str | None,
    target_xid: str | None,
    target_name: str | None,
    target_immediate: str | None,
    target_exclusive: bool,
    target_action: str,
    target_timeline: str | None,
    backup_id: str | None,
    standby: bool,
    jobs: int | None,
    delta: bool,
    archive_mode: str | None,
    archive: bool,
    as_json: bool,
) -> None:
    """Restore a backup and set PostgreSQL up to replay WAL to a target.

    Without a target, recovery replays to the end of the archived WAL.
    Nothing is written if the directory is not empty or the target lies
    outside the recoverable window. Restored anywhere but postgres.pgdata
    the cluster does not archive (see --archive-mode). With --delta the
    directory may hold this cluster's data directory (PostgreSQL stopped):
    matching files are kept, the rest fetched; until it completes the
    directory cannot be started.
    """
    from janua_backup import output
    from janua_backup.commands import restore as command
    from janua_backup.memory import RESTORE_MMAP_THRESHOLD_BYTES, bound_allocator

    bound_allocator(RESTORE_MMAP_THRESHOLD_BYTES)
    from janua_backup.commands.restore_request import build_request

    request = build_request(
        pgdata=pgdata,
        target_time=target_time,
        timezone=timezone,
        target_lsn=target_lsn,
        target_xid=target_xid,
        target_name=target_name,
        immediate=target_immediate == "immediate",
        latest=target_immediate == "latest",
        exclusive=target_exclusive,
        action=target_action,
        timeline=target_timeline,
        backup_id=backup_id,
        standby=standby,
        delta=delta,
        archive_mode=archive_mode,
        archive=archive,
    )
    if request.target.time is not None and not as_json:
        click.echo(f"target time resolves to {request.recovery_target.value} (UTC)", err=True)
    settings = context().settings(backup={"jobs": jobs})
    command.require_config(settings)
    choice, plan = command.prepare(settings, request)
    output.plan(plan, as_json)
    meter = output.ProgressMeter(plan.fetch_bytes, "restore")
    result = command.execute(settings, request, choice, plan, progress=meter)
    meter.close()
    output.restore(result, as_json)
