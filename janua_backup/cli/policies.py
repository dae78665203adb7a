"""``policies``: where the installed alert rules, IAM policy and default policy are.

The build copies the repository's top-level ``policies/`` into the package
(setup.py), so a pip, pipx or uv install carries them; from a checkout or an
editable install the work tree's ``policies/`` is the copy. Operators copy these
files out (``cp "$(janua-backup policies --path)"/default.toml /etc/...``);
nothing here reads a config file or a repository.
"""

from __future__ import annotations

from pathlib import Path

import click

from janua_backup.cli.app import cli
from janua_backup.errors import InputError

POLICY_FILES = ("default.toml", "prometheus-alerts.yml", "s3-iam-policy.json")


def policies_dir() -> Path:
    """The directory holding the policy files: the installed copy, else the checkout's."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "policies", package.parent / "policies"):
        if all((candidate / name).is_file() for name in POLICY_FILES):
            return candidate
    raise InputError(
        f"the policy files are not installed next to {package}; reinstall janua-backup "
        "from a wheel or a checkout (they ship in its policies/ directory)"
    )


@cli.command()
@click.option("--path", "path_only", is_flag=True, help="Print only the directory.")
def policies(path_only: bool) -> None:
    """Show where the shipped policy files are: alert rules, IAM policy, default policy.

    \b
    Copy them out and adapt them, e.g.:
      cp "$(janua-backup policies --path)/default.toml" /etc/janua-backup/policy.toml
    """
    directory = policies_dir()
    if path_only:
        click.echo(str(directory))
        return
    for path in sorted(directory.iterdir()):
        if path.is_file():
            click.echo(str(path))
