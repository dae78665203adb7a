"""``expire``: apply the retention policy to the repository."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from janua_backup.cli.app import FiniteRange, cli, context, json_option


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only list what would go and the space it frees.")
@click.option(
    "--policy", "policy_path", type=click.Path(dir_okay=False), help="Policy file ([retention])."
)
@click.option(
    "--window-days",
    type=FiniteRange(min=0, max=36500),
    help="Recovery window in days (default: the policy's, 30).",
)
@click.option(
    "--min-backups",
    type=click.IntRange(min=1),
    help="Never keep fewer backups than this (default: the policy's, 2).",
)
@json_option
def expire(
    dry_run: bool,
    policy_path: str | None,
    window_days: float | None,
    min_backups: int | None,
    as_json: bool,
) -> None:
    """Delete the backups and WAL the retention policy no longer needs.

    \b
    Kept: every backup consistent inside the recovery window, the newest one
    before it (so every point of the window stays restorable), at least
    --min-backups backups, pinned backups (`pin`, `backup --keep`) and the
    backups an incremental kept one is built on. Then WAL older than the
    oldest kept backup goes; timeline history files always stay.
    Only one backup or expire of a cluster runs at a time (a lock in the
    repository); a second one exits 42 naming the holder. --dry-run takes
    no lock and deletes nothing.
    """
    from janua_backup import policy
    from janua_backup.commands import expire as command
    from janua_backup.output import expire as output

    rules = policy.load(Path(policy_path)) if policy_path else policy.default()
    retention = rules.retention
    if window_days is not None:
        retention = replace(retention, recovery_window_days=window_days)
    if min_backups is not None:
        retention = replace(retention, min_backups=min_backups)
    output.render(command.run(context().settings(), retention, dry_run=dry_run), as_json)
