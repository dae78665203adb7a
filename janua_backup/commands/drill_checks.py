"""The checks a restore drill runs on its scratch server, each a pass or a fail with a reason.

A check never raises for what it finds: a failing query, a corrupt index or a
database that refuses connections is a failed ``DrillCheck`` in the report,
so one bad finding does not hide the others.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from janua_backup.errors import JanuaError
from janua_backup.pg.scratch import ScratchServer
from janua_backup.pg.wal import Lsn
from janua_backup.policy import CheckQuery
from janua_backup.repository.drills import DrillCheck


def timed(name: str, check: Callable[[], str]) -> DrillCheck:
    """Runs ``check``; its return is the success message, a JanuaError the failure."""
    started = time.monotonic()
    try:
        message = check()
        ok = True
    except JanuaError as exc:
        message, ok = exc.message, False
    return DrillCheck(name, ok, message, round(time.monotonic() - started, 3))


def skipped(name: str, reason: str) -> DrillCheck:
    """A check this machine cannot run (its tool is missing): reported, not failed."""
    return DrillCheck(name, True, reason, 0.0, skipped=True)


def missing_tool(server: ScratchServer, program: str) -> str | None:
    """Why ``program`` cannot run from the scratch server's bindir, or None when it can.

    Packagers split the client programs from the server (Debian's -contrib, the
    minimal builds of some images), so a drill names what is missing and goes on.
    """
    path = server.bindir / program
    if not path.is_file():
        return f"{program} is not in {server.bindir}"
    if not os.access(path, os.X_OK):
        return f"{path} is not executable"
    return None


class CheckFailure(JanuaError):
    """A finding, not an error of the tool: the drill records it and goes on."""


def databases(server: ScratchServer) -> DrillCheck:
    def check() -> str:
        names = [
            str(r[0])
            for r in server.query(
                "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname"
            )
        ]
        refused = []
        for name in names:
            try:
                server.query("SELECT 1", dbname=name)
            except JanuaError as exc:
                refused.append(f"{name} ({exc.message})")
        if refused:
            raise CheckFailure("databases refuse connections: " + ", ".join(refused))
        return f"{len(names)} databases accept connections: {', '.join(names)}"

    return timed("databases", check)


def queries(server: ScratchServer, checks: Sequence[CheckQuery]) -> list[DrillCheck]:
    return [timed(f"query {q.name}", functools.partial(_query, server, q)) for q in checks]


def _query(server: ScratchServer, q: CheckQuery) -> str:
    rows = server.query(q.query, dbname=q.database)
    value = rows[0][0] if rows and rows[0] else None
    if q.min_value is None:
        return f"{q.query} on {q.database} returned {value!r}"
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise CheckFailure(f"{q.query} on {q.database} returned {value!r}, not a number")
    if value < q.min_value:
        raise CheckFailure(
            f"{q.query} on {q.database} returned {value}, expected at least {q.min_value}"
        )
    return f"{q.query} on {q.database} returned {value} (>= {q.min_value})"


def amcheck(server: ScratchServer, timeout_s: float) -> DrillCheck:
    """pg_amcheck on every database: B-tree and heap structure (installs amcheck in the
    scratch copy only); skipped where pg_amcheck (PostgreSQL 13 has none) or the amcheck
    extension is not installed."""
    missing = missing_tool(server, "pg_amcheck")
    if missing:
        return skipped("amcheck", f"{missing} (PostgreSQL 14 and later ship it): not run")
    if not _extension_available(server, "amcheck"):
        return skipped(
            "amcheck",
            f"the amcheck extension is not installed beside {server.bindir} "
            "(a contrib package): pg_amcheck not run",
        )

    def check() -> str:
        code, output = server.run_tool(
            "pg_amcheck",
            "--all",
            "--install-missing",
            "--host",
            str(server.socket_dir),
            "--port",
            str(server.port),
            "--username",
            server.user,
            timeout_s=timeout_s,
        )
        if code != 0:
            lines = output.splitlines()
            raise CheckFailure(f"pg_amcheck found problems (exit {code}): " + " | ".join(lines[:5]))
        return "pg_amcheck found no corruption in any database"

    return timed("amcheck", check)


def checksums(server: ScratchServer, timeout_s: float) -> DrillCheck:
    """pg_checksums --check reads every page; the server must be stopped cleanly first.
    Skipped where the bindir has no pg_checksums."""
    missing = missing_tool(server, "pg_checksums")
    if missing:
        return skipped("data checksums", f"{missing}: page checksums not verified")

    def check() -> str:
        code, output = server.run_tool(
            "pg_checksums", "--check", "-D", str(server.pgdata), timeout_s=timeout_s
        )
        if code != 0:
            raise CheckFailure(f"pg_checksums reports errors (exit {code}): {output[-300:]}")
        return "every page's checksum verified"

    return timed("data checksums", check)


def _extension_available(server: ScratchServer, name: str) -> bool:
    """Whether the server can CREATE EXTENSION ``name``; when asking fails, True, so
    the check runs and reports the real problem as its finding."""
    try:
        return bool(
            server.query(f"SELECT 1 FROM pg_available_extensions WHERE name = '{name}'")
        )
    except JanuaError:
        return True


def reached_end(recovered_to: Lsn | None, last_segment_start: Lsn | None) -> DrillCheck:
    """With no target, recovery must replay into the newest archived segment: ending
    earlier means a WAL file could not be fetched and later data would be lost."""

    def check() -> str:
        if recovered_to is None or last_segment_start is None:
            raise CheckFailure("the recovery point could not be determined")
        if recovered_to < last_segment_start:
            raise CheckFailure(
                f"recovery ended at {recovered_to}, before the newest archived WAL "
                f"(from {last_segment_start}): WAL could not be replayed to the end"
            )
        return f"replayed to {recovered_to}, into the newest archived WAL segment"

    return timed("replayed to the end of the archive", check)


def recovered_time(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None
