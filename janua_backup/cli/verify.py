"""``verify``: the restore drill, and ``verify --repository-only``, the repository check.

The repository check was ``verify --repo``, a flag that shadowed the global
``--repo URL`` once global options were accepted after the verb. It is now
``--repository-only`` (pgBackRest users know ``verify`` as the check of the
repository's objects; "only" says no drill runs). ``verify --repo`` without a
URL still means the check, with a deprecation line on stderr; with a URL it is
the global option.
"""

from __future__ import annotations

import signal
from pathlib import Path

import click

from janua_backup.cli.app import (
    FiniteRange,
    check_backup_id,
    cli,
    context,
    json_option,
    remember_global,
)

_NO_URL = "\0repository-only"  # what a bare --repo (the old flag) parses to


def _repo_or_old_flag(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> bool:
    """``--repo URL`` is the global option; a bare ``--repo`` the old spelling of the check."""
    urls = [value for value in values if value != _NO_URL]
    if urls:
        remember_global(ctx, "--repo", urls[-1])
    if len(urls) == len(values):
        return False
    click.echo(
        "janua-backup: warning: verify --repo without a URL is deprecated; "
        "use verify --repository-only",
        err=True,
    )
    return True


@cli.command()
@click.option(
    "--repository-only",
    "repo_only",
    is_flag=True,
    help="Check the repository only: every object and the WAL chain; no PostgreSQL needed.",
)
@click.option(
    "--repo",
    "old_repo_flag",
    is_flag=False,
    flag_value=_NO_URL,
    multiple=True,
    callback=_repo_or_old_flag,
    help="Repository URL (global option; wins over one before the verb). "
    "Bare: old spelling of --repository-only.",
)
@click.option(
    "--backup-id",
    callback=check_backup_id,
    help="Drill or check this backup (drill default: the newest).",
)
@click.option("--target-time", help="Drill: recover to this time (ISO 8601 with Z or offset).")
@click.option("--timezone", help="Zone for a --target-time without offset.")
@click.option("--target-lsn", help="Drill: recover to this LSN.")
@click.option(
    "--target",
    "target_kind",
    type=click.Choice(["latest", "immediate"]),
    help="Drill: the end of the archive, or consistency only (default: the policy's).",
)
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False), help="Policy file.")
@click.option("--amcheck/--no-amcheck", default=None, help="Drill: run pg_amcheck.")
@click.option(
    "--scratch-dir",
    type=click.Path(file_okay=False),
    help="Drill: where to restore (default: /var/tmp, on disk; /tmp is often RAM).",
)
@click.option("--keep", is_flag=True, help="Drill: keep the scratch directory afterwards.")
@click.option("--pg-bindir", help="Drill: PostgreSQL binaries of the backup's major version.")
@click.option("--pg-user", help="Drill: role to connect as (default: the data's owner).")
@click.option(
    "--timeout",
    "timeout_s",
    type=FiniteRange(min=0, min_open=True, max=604800),
    help="Drill: seconds allowed for recovery.",
)
@click.option("--jobs", type=click.IntRange(1, 1024), help="Objects read at once (default: cores).")
@json_option
def verify(
    repo_only: bool,
    old_repo_flag: bool,
    backup_id: str | None,
    target_time: str | None,
    timezone: str | None,
    target_lsn: str | None,
    target_kind: str | None,
    policy_path: str | None,
    amcheck: bool | None,
    scratch_dir: str | None,
    keep: bool,
    pg_bindir: str | None,
    pg_user: str | None,
    timeout_s: float | None,
    jobs: int | None,
    as_json: bool,
) -> None:
    """Prove the backups restore; exit 40 if a problem is found.

    \b
    Without --repository-only: a restore drill. The backup is restored into a scratch
    directory, a temporary PostgreSQL replays WAL to the target, the checks
    run (databases, the policy's queries, pg_amcheck, data checksums) and the
    report goes to stdout and into the repository. The scratch server and
    directory are removed afterwards, also on failure or Ctrl-C.
    With --repository-only: every object and the WAL chain are read and checked.
    """
    from janua_backup.errors import VerifyFailed

    if repo_only or old_repo_flag:
        from janua_backup.commands import verify_repo as command
        from janua_backup.output import verify_repo as report

        result = command.run(context().settings(), backup_id, jobs)
        report.render(result, as_json)
        if not result.ok:
            raise VerifyFailed(result.summary)
        return
    from janua_backup import policy
    from janua_backup.memory import RESTORE_MMAP_THRESHOLD_BYTES, bound_allocator

    bound_allocator(RESTORE_MMAP_THRESHOLD_BYTES)
    from janua_backup.commands import verify as drill
    from janua_backup.output import verify as output

    rules = policy.load(Path(policy_path)) if policy_path else policy.default()
    request = drill.request_from_policy(
        rules.verify,
        pg_bindir=pg_bindir or context().settings().postgres.bindir,
        backup_id=backup_id,
        target_time=target_time,
        timezone=timezone,
        target_lsn=target_lsn,
        target_kind=target_kind,
        amcheck=amcheck,
        scratch_parent=Path(scratch_dir) if scratch_dir else None,
        keep=keep,
        pg_user=pg_user,
        timeout_s=timeout_s,
    )
    # SIGTERM (cron's timeout, systemd) cleans up like Ctrl-C: scratch server stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    done = drill.run(context().settings(backup={"jobs": jobs}), request)
    output.render(done, as_json)
    if not done.report.passed:
        raise VerifyFailed(done.report.summary)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
