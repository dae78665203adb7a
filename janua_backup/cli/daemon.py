"""``daemon``: run the policy's jobs on schedule and serve Prometheus metrics."""

from __future__ import annotations

from pathlib import Path

import click

from janua_backup.cli.app import cli, context

DEFAULT_METRICS_PORT = 9188  # the scheduler's default too; kept here so --help needs no import


@cli.command()
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False),
    help="Policy file: schedule, backup, retention, verify (default: the built-in policy).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_METRICS_PORT,
    show_default=True,
    help="Serve Prometheus metrics at http://ADDRESS:PORT/metrics; 0: no endpoint.",
)
@click.option(
    "--metrics-address",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics endpoint listens on (0.0.0.0: every interface).",
)
def daemon(policy_path: str | None, metrics_port: int, metrics_address: str) -> None:
    """Run backup, verify, expire and check on the policy's schedule until stopped.

    \b
    Each job calls what the command of the same name calls; a job never
    overlaps itself, and backup, verify and expire take turns. Backup and
    expire take the same repository lock as from cron. Logs
    say when each job runs next, and each job's outcome, duration and sizes
    (--log-format json for one object per line). SIGTERM or SIGINT stops the
    daemon: no new jobs; a running backup is abandoned cleanly (nothing
    committed, its objects removed); a running drill or expire is waited for;
    exit 0.
    """
    from janua_backup import policy
    from janua_backup.memory import bound_allocator

    bound_allocator()
    from janua_backup.daemon import scheduler

    rules = policy.load(Path(policy_path)) if policy_path else policy.default()
    options = scheduler.Options(metrics_address=metrics_address, metrics_port=metrics_port)
    scheduler.run(context().settings(), rules, options)
