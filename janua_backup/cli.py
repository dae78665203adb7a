"""The command line: parse, build Settings, call one command, render its result.

Every ``JanuaError`` becomes one line on stderr and its exit code; no
traceback for anything a user can cause. Commands are imported inside the
click callbacks so ``wal-push``, which PostgreSQL runs once per segment, does
not pay for psycopg or the output module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import click

from janua_backup import __version__, config, logs
from janua_backup.config import Settings
from janua_backup.errors import (
    WAL_FETCH_FATAL_EXIT,
    WAL_FETCH_NOT_FOUND_EXIT,
    JanuaError,
)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    config_path: str | None
    overrides: dict[str, dict[str, object]] = field(default_factory=dict)
    _settings: Settings | None = None

    def settings(self, **more: dict[str, object]) -> Settings:
        merged = {k: dict(v) for k, v in self.overrides.items()}
        for section, values in more.items():
            merged.setdefault(section, {}).update(values)
        return config.load(self.config_path, os.environ, merged)


def fail(error: JanuaError) -> NoReturn:
    click.echo(f"janua-backup: error: {error.message}", err=True)
    sys.exit(error.exit_code)


class JanuaGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except JanuaError as error:
            fail(error)
        except KeyboardInterrupt:
            click.echo("janua-backup: interrupted", err=True)
            sys.exit(130)


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@click.group(cls=JanuaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="janua-backup")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="TOML config file (default: $JANUA_BACKUP_CONFIG).",
)
@click.option("--repo", help="Repository URL: s3://bucket/prefix or file:///path.")
@click.option("--s3-endpoint", help="S3 endpoint URL (MinIO, SeaweedFS, ...).")
@click.option("--s3-region", help="S3 region.")
@click.option("--pgdata", "global_pgdata", help="PostgreSQL data directory (backup, wal-push).")
@click.option("--dsn", help="libpq connection string for backup.")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.option(
    "--log-format", default="text", show_default=True, type=click.Choice(["text", "json"])
)
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: str | None,
    repo: str | None,
    s3_endpoint: str | None,
    s3_region: str | None,
    global_pgdata: str | None,
    dsn: str | None,
    log_level: str,
    log_format: str,
) -> None:
    """PostgreSQL base backups, WAL archiving and point-in-time recovery to S3 or a directory.

    \b
    PostgreSQL settings:
      archive_mode = on
      archive_command = 'janua-backup --config /etc/janua-backup.toml wal-push %p'
    restore writes restore_command for you.
    """
    logs.setup(log_level, log_format)
    ctx.obj = Context(
        config_path,
        {
            "repository": {"url": repo},
            "s3": {"endpoint": s3_endpoint, "region": s3_region},
            "postgres": {"pgdata": global_pgdata, "dsn": dsn},
        },
    )


def _ctx() -> Context:
    obj = click.get_current_context().find_object(Context)
    assert obj is not None
    return obj


@cli.command("wal-push")
@click.argument("wal_path")
def wal_push(wal_path: str) -> None:
    """Archive one WAL file (archive_command: wal-push %p).

    Exits 0 only once the file is durably stored. A file already archived
    with the same content is success; different content is refused.
    """
    from janua_backup.commands import wal_push as command

    command.run(_ctx().settings(), wal_path)


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

    pgdata = Path(str(_ctx().overrides["postgres"].get("pgdata") or "."))
    try:
        result = command.run(_ctx().settings(), wal_name, destination)
    except Exception as error:
        message = error.message if isinstance(error, JanuaError) else repr(error)
        standby = command.in_standby(pgdata)
        click.echo(f"janua-backup: error: wal-fetch {wal_name}: {message}", err=True)
        sys.exit(WAL_FETCH_NOT_FOUND_EXIT if standby else WAL_FETCH_FATAL_EXIT)
    if not result.found:
        sys.exit(WAL_FETCH_NOT_FOUND_EXIT)


@cli.command()
@click.option("--compression", type=click.Choice(config.CODECS), help="Override compression.codec.")
@click.option("--level", type=int, help="Compression level (gzip 1-9, zstd 1-19).")
@click.option("--jobs", type=int, help="Files compressed and uploaded at once (default: cores).")
@json_option
def backup(compression: str | None, level: int | None, jobs: int | None, as_json: bool) -> None:
    """Take a full base backup of the running cluster."""
    from janua_backup import output
    from janua_backup.commands import backup as command

    settings = config.with_compression(_ctx().settings(backup={"jobs": jobs}), compression, level)
    meter = output.ProgressMeter(0, "backup")
    result = command.run(settings, progress=meter)
    meter.close()
    output.backup(result, as_json)


@cli.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List backups with their sizes and recoverable windows."""
    from janua_backup import output
    from janua_backup.commands import info as command

    output.info(command.run(_ctx().settings()), as_json)


@cli.command()
@click.argument("backup_id", required=False)
@json_option
def info(backup_id: str | None, as_json: bool) -> None:
    """Show the repository, its WAL and each backup's recoverable window."""
    from janua_backup import output
    from janua_backup.commands import info as command

    output.info(command.run(_ctx().settings(), backup_id), as_json)


@cli.command()
@click.option(
    "--pgdata",
    required=True,
    type=click.Path(file_okay=False),
    help="Empty or new directory to restore into.",
)
@click.option("--target-time", help="Recover to this time: ISO 8601 with Z or an offset.")
@click.option("--timezone", help="Zone for a --target-time without offset, e.g. Europe/Paris.")
@click.option("--target-lsn", help="Recover to this LSN, e.g. 0/3000060.")
@click.option("--target-xid", help="Recover to this transaction id.")
@click.option("--target-name", help="Recover to this restore point (pg_create_restore_point).")
@click.option(
    "--target",
    "target_immediate",
    type=click.Choice(["immediate"]),
    help="'immediate': stop as soon as the backup is consistent.",
)
@click.option("--target-exclusive", is_flag=True, help="Stop just before the target, not after.")
@click.option(
    "--target-action",
    default="promote",
    show_default=True,
    type=click.Choice(["promote", "pause", "shutdown"]),
)
@click.option("--target-timeline", help="'latest' (default), 'current' or a timeline number.")
@click.option("--backup-id", help="Restore this backup instead of the best one for the target.")
@click.option("--standby", is_flag=True, help="Write standby.signal (build a replica).")
@click.option("--jobs", type=int, help="Objects fetched at once (default: cores).")
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
    as_json: bool,
) -> None:
    """Restore a backup and set PostgreSQL up to replay WAL to a target.

    Without a target, recovery replays to the end of the archived WAL.
    Nothing is written if the directory is not empty or the target lies
    outside the recoverable window.
    """
    from janua_backup import output
    from janua_backup.commands import restore as command
    from janua_backup.commands.restore_request import build_request

    request = build_request(
        pgdata=pgdata,
        target_time=target_time,
        timezone=timezone,
        target_lsn=target_lsn,
        target_xid=target_xid,
        target_name=target_name,
        immediate=bool(target_immediate),
        exclusive=target_exclusive,
        action=target_action,
        timeline=target_timeline,
        backup_id=backup_id,
        standby=standby,
    )
    if request.target.time is not None and not as_json:
        click.echo(f"target time resolves to {request.recovery_target.value} (UTC)", err=True)
    settings = _ctx().settings(backup={"jobs": jobs})
    choice, plan = command.prepare(settings, request)
    output.plan(plan, as_json)
    meter = output.ProgressMeter(plan.fetch_bytes, "restore")
    result = command.execute(settings, request, choice, plan, progress=meter)
    meter.close()
    output.restore(result, as_json)


def main() -> None:
    cli(prog_name="janua-backup")
