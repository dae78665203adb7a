"""The command line: parse, build Settings, call one command, render its result.

One module per group of verbs; each registers its commands on the group in
``app``. Commands are imported inside the click callbacks so ``wal-push``,
which PostgreSQL runs once per segment, does not pay for psycopg or output.
"""

from janua_backup.cli import backup, check, daemon, expire, policies, restore, verify, wal  # noqa: F401
from janua_backup.cli.app import cli, main

__all__ = ["cli", "main"]
