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
    _settings: Settings | None = None
    log_level: str = "info"
    log_format: str = "text"
    quiet: bool = False
    as_json: bool = False

    def start(self, ctx: click.Context) -> None:
        """Logs and --quiet, once every global option is known (before and after the verb)."""
        level = "warning" if self.quiet and self.log_level == "info" else self.log_level
        logs.setup(level, self.log_format)
        if self.quiet:
            # Results go to stdout; errors (one line, to stderr) and the exit code still tell cron.
            ctx.with_resource(contextlib.redirect_stdout(io.StringIO()))

    def settings(self, **more: dict[str, object]) -> Settings:
        merged = {k: dict(v) for k, v in self.overrides.items()}
        for section, values in more.items():
            merged.setdefault(section, {}).update(values)
        return config.load(self.config_path, os.environ, merged)


def fail(error: JanuaError) -> NoReturn:
    click.echo(f"janua-backup: error: {error.message}", err=True)
    sys.exit(error.exit_code)


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


def _json_callback(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """``list --json`` or ``--json list``: either place asks for JSON."""
    obj = ctx.find_object(Context)
    return bool(value or (obj is not None and obj.as_json))


json_option = click.option(
    "--json", "as_json", is_flag=True, callback=_json_callback, help="Print the result as JSON."
)

# Global options a user may also give after the verb (``list --repo X``): flag spelling ->
# (section, key) of the settings override it sets.
_SETTINGS_AFTER_VERB: dict[str, tuple[str, str]] = {
    "--repo": ("repository", "url"),
    "--s3-endpoint": ("s3", "endpoint"),
    "--s3-region": ("s3", "region"),
    "--pgdata": ("postgres", "pgdata"),
    "--dsn": ("postgres", "dsn"),
}
_AFTER_VERB_HELP = {
    "--config": "TOML config file",
    "--repo": "Repository URL",
    "--s3-endpoint": "S3 endpoint URL",
    "--s3-region": "S3 region",
    "--pgdata": "PostgreSQL data directory",
    "--dsn": "libpq connection string",
    "--log-level": "Log level",
    "--log-format": "Log format",
    "--quiet": "Print nothing on success",
    "--json": "Print the result as JSON",
}


def _help(flag: str) -> str:
    return f"{_AFTER_VERB_HELP[flag]} (global option; wins over one before the verb)."


def remember_global(ctx: click.Context, flag: str, value: object) -> None:
    """Record a global option given after the verb; it overrides the one given before."""
    obj = ctx.find_object(Context)
    if obj is None or value is None or value is False:
        return
    if flag in _SETTINGS_AFTER_VERB:
        section, key = _SETTINGS_AFTER_VERB[flag]
        obj.overrides.setdefault(section, {})[key] = value
    elif flag == "--config":
        obj.config_path = str(value)
    elif flag == "--json":
        obj.as_json = True
    else:
        setattr(obj, flag.lstrip("-").replace("-", "_"), value)


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> None:
    remember_global(ctx, param.opts[0], value)


def _after_verb_options() -> list[click.Option]:
    """The group's options again, for a subcommand; built only for the command being run."""
    common: dict[str, Any] = {"expose_value": False, "callback": _remember}
    return [
        click.Option(
            ["--config"], type=click.Path(dir_okay=False), help=_help("--config"), **common
        ),
        *(click.Option([flag], help=_help(flag), **common) for flag in _SETTINGS_AFTER_VERB),
        click.Option(
            ["--log-level"],
            type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
            help=_help("--log-level"),
            **common,
        ),
        click.Option(
            ["--log-format"],
            type=click.Choice(["text", "json"]),
            help=_help("--log-format"),
            **common,
        ),
        click.Option(["--quiet", "-q"], is_flag=True, help=_help("--quiet"), **common),
        click.Option(["--json"], is_flag=True, help=_help("--json"), **common),
    ]


class JanuaCommand(click.Command):
    """A verb that also takes the global options, so ``list --repo X`` works as
    ``--repo X list`` does. A verb's own option of the same spelling keeps its meaning
    (``restore --pgdata`` is the directory to restore into)."""

    _globals: list[click.Option] | None = None

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        if self._globals is None:
            taken = {opt for param in params for opt in param.opts}
            self._globals = [o for o in _after_verb_options() if not taken.intersection(o.opts)]
        return [*params[:-1], *self._globals, *params[-1:]]  # --help stays last

    def invoke(self, ctx: click.Context) -> Any:
        obj = ctx.find_object(Context)
        if obj is not None:
            obj.start(ctx)
        return super().invoke(ctx)


class JanuaGroup(click.Group):
    command_class = JanuaCommand

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except JanuaError as error:
            fail(error)
        except KeyboardInterrupt:
            click.echo("janua-backup: interrupted", err=True)
            sys.exit(130)


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
@click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON, where there is one."
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
    as_json: bool,
) -> None:
    """PostgreSQL base backups, WAL archiving and point-in-time recovery to S3 or a directory.

    \b
    PostgreSQL settings:
      archive_mode = on
      archive_command = 'janua-backup --config /etc/janua-backup.toml wal-push %p'
    restore writes restore_command for you.

    \b
    The options below go before or after the verb (--repo X list, list --repo X);
    given in both places, the one after the verb wins.
    """
    ctx.obj = Context(
        config_path,
        {
            "repository": {"url": repo},
            "s3": {"endpoint": s3_endpoint, "region": s3_region},
            "postgres": {"pgdata": global_pgdata, "dsn": dsn},
        },
        log_level=log_level,
        log_format=log_format,
        quiet=quiet,
        as_json=as_json,
    )


def context() -> Context:
    obj = click.get_current_context().find_object(Context)
    assert obj is not None
    return obj


def main() -> None:
    cli(prog_name="janua-backup")
