"""``check``: is this setup able to back up and archive, right now."""

from __future__ import annotations

import click

from janua_backup.cli.app import FiniteRange, cli, context, json_option
from janua_backup.errors import CheckFailed


@cli.command()
@click.option(
    "--timeout",
    "timeout_s",
    type=FiniteRange(min=0, max=86400),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the switched WAL segment to reach the repository.",
)
@json_option
def check(timeout_s: float, as_json: bool) -> None:
    """Check the configuration, the repository, PostgreSQL and WAL archiving, end to end.

    Forces a WAL switch and waits until that segment is in the repository.
    Exits 41 if a step fails; its message names the setting to fix.
    """
    from janua_backup.commands import check as command
    from janua_backup.output import check as output

    result = command.run(context().settings(), timeout_s=timeout_s)
    output.render(result, as_json)
    if not result.ok:
        raise CheckFailed(result.summary)
