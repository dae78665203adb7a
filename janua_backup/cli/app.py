"""The click group and what every command shares: settings, errors -> exit codes.

Every ``JanuaError`` becomes one line on stderr and its exit code; no
traceback for anything a user can cause. Commands are imported inside the
click callbacks so ``wal-push``, which PostgreSQL runs once per segment, does
not pay for psycopg or the output module.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import click

from janua_backup import __version__, config, logs
from janua_backup.config import Settings
from janua_backup.errors import (
    JanuaError,
)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    config_path: str | None
    overrides: dict[str, dict[str, object]] = field(default_factory=dict)
    quiet: bool = False  # --quiet: nothing on stderr either on success (plan, progress)
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


class FiniteRange(click.FloatRange):
    """A ``FloatRange`` that refuses ``nan`` too: click lets it through every bound,
    and a ``nan`` timeout never expires."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def check_backup_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback: an id a backup can have, or bad input (exit 4) before anything opens."""
    from janua_backup.errors import InputError
    from janua_backup.repository.layout import is_backup_id

    if value is not None and not is_backup_id(value):
        raise InputError(
            f"{value!r} is not a backup id (ids look like 20261125T214300Z; list shows them)"
        )
    return value


JOBS = click.IntRange(0, 1024)
"""Objects or files handled at once; 0: one per core (config.py says why 1024)."""


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
@click.option(
    "--quiet", "-q", is_flag=True, help="Print nothing on success, only errors (for cron)."
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
    quiet: bool,
) -> None:
    """PostgreSQL base backups, WAL archiving and point-in-time recovery to S3 or a directory.

    \b
    PostgreSQL settings:
      archive_mode = on
      archive_command = 'janua-backup --config /etc/janua-backup.toml wal-push %p'
    restore writes restore_command for you.
    """
    logs.setup("warning" if quiet and log_level == "info" else log_level, log_format)
    if quiet:
        # Results go to stdout; errors (one line, to stderr) and the exit code still tell cron.
        ctx.with_resource(contextlib.redirect_stdout(io.StringIO()))
    ctx.obj = Context(
        config_path,
        {
            "repository": {"url": repo},
            "s3": {"endpoint": s3_endpoint, "region": s3_region},
            "postgres": {"pgdata": global_pgdata, "dsn": dsn},
        },
        quiet=quiet,
    )


def context() -> Context:
    obj = click.get_current_context().find_object(Context)
    assert obj is not None
    return obj


def main() -> None:
    cli(prog_name="janua-backup")
