"""Helpers for driving janua-backup as a person (or PostgreSQL) would: through its CLI.

A ``Setup`` is one repository + config file + archiving cluster. Tests run the
real console script in a subprocess, so exit codes and stderr are what an
operator sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from localstack import PgCluster, archiving_settings, chown_to_postgres, write_private


@dataclass
class RepoSpec:
    """What goes into the [repository], [s3], [compression] and [encryption] sections."""

    url: str
    s3: Mapping[str, str] = field(default_factory=dict)
    codec: str = "gzip"
    key_file: Path | None = None
    passphrase: str | None = None
    extra: str = ""


def write_config(
    path: Path,
    spec: RepoSpec,
    *,
    pgdata: Path | None = None,
    dsn: str | None = None,
    primary_dsn: str | None = None,
    bindir: Path | None = None,
    fetch_deadline_s: float = 20.0,
    s3_deadline_s: float = 10.0,
) -> Path:
    lines = ["[repository]", f'url = "{spec.url}"', ""]
    if spec.s3:
        lines += [
            "[s3]",
            *[f'{k} = "{v}"' for k, v in spec.s3.items()],
            f"retry_deadline_s = {s3_deadline_s}",
            "",
        ]
    lines += ["[compression]", f'codec = "{spec.codec}"', ""]
    if spec.key_file or spec.passphrase:
        lines += ["[encryption]"]
        if spec.key_file:
            lines.append(f'key_file = "{spec.key_file}"')
        if spec.passphrase:
            lines.append(f'passphrase = "{spec.passphrase}"')
        lines.append("")
    if pgdata or dsn:
        lines += ["[postgres]"]
        if pgdata:
            lines.append(f'pgdata = "{pgdata}"')
        if dsn:
            lines.append(f'dsn = "{dsn}"')
        if primary_dsn:
            lines.append(f'primary_dsn = "{primary_dsn}"')
        if bindir:
            lines.append(f'bindir = "{bindir}"')
        lines.append("")
    lines += ["[wal]", f"fetch_retry_deadline_s = {fetch_deadline_s}", "", spec.extra]
    write_private(path, "\n".join(lines))
    chown_to_postgres(path)
    return path


def run(
    exe: Path,
    config: Path | None,
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 300,
) -> subprocess.CompletedProcess[str]:
    argv = [str(exe)]
    if config is not None:
        argv += ["--config", str(config)]
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JANUA_BACKUP_", "AWS_")) and k != "PGDATA"
    }
    full_env.update(env or {})
    return subprocess.run(
        [*argv, *args],
        capture_output=True,
        text=True,
        cwd=cwd or "/",
        env=full_env,
        timeout=timeout_s,
        check=False,
    )


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, (
        f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )
    return done


def run_json(exe: Path, config: Path, *args: str) -> Any:
    return json.loads(ok(run(exe, config, *args, "--json")).stdout)


def archive_command(exe: Path, config: Path) -> str:
    return f"{exe} --config {config} wal-push %p"


def printed_archive_command(exe: Path, config: Path) -> str:
    """What ``janua-backup archive-command`` tells a user to set, unquoted."""
    line = ok(run(exe, config, "archive-command")).stdout.strip()
    prefix = "archive_command = '"
    assert line.startswith(prefix) and line.endswith("'"), line
    return line[len(prefix) : -1].replace("''", "'").replace("\\\\", "\\")


def archiving_cluster(
    factory: Any,
    exe: Path,
    config: Path,
    extra: Mapping[str, str] | None = None,
    initdb_args: Sequence[str] = (),
) -> PgCluster:
    settings = archiving_settings(archive_command(exe, config))
    settings.update(extra or {})
    cluster: PgCluster = factory(settings, initdb_args=initdb_args)
    return cluster


def switch_and_wait_archived(cluster: PgCluster, timeout_s: float = 60) -> str:
    """Forces a segment switch and waits until the archiver reports it archived."""
    (name,) = cluster.sql("SELECT pg_walfile_name(pg_switch_wal())")[0]
    wait_archived(cluster, name, timeout_s)
    return str(name)


def wait_archived(cluster: PgCluster, name: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        (last,) = cluster.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")[0]
        if last and last[:24] >= name:
            return
        if time.monotonic() > deadline:
            stats = cluster.sql("SELECT * FROM pg_stat_archiver")
            raise AssertionError(f"{name} not archived after {timeout_s}s: {stats}")
        time.sleep(0.2)


def insert_rows(
    cluster: PgCluster, first: int, count: int, pause_s: float = 0.02
) -> list[tuple[int, datetime]]:
    """One row per transaction; returns (id, commit time) for each."""
    for i in range(first, first + count):
        cluster.sql("INSERT INTO items (id, note) VALUES (%s, %s)", (i, f"row {i}"))
        time.sleep(pause_s)
    rows = cluster.sql(
        "SELECT id, pg_xact_commit_timestamp(xmin) FROM items"
        " WHERE id >= %s AND id < %s ORDER BY id",
        (first, first + count),
    )
    return [(int(r[0]), r[1]) for r in rows]


def start_restored(
    factory: Any, pgdata: Path, *, archive: bool = False, timeout_s: float = 120
) -> PgCluster:
    """Starts a restored data directory and waits until recovery has finished (promoted)."""
    settings = {} if archive else {"archive_mode": "off"}
    cluster: PgCluster = factory.adopt(pgdata, settings=settings, start=True)
    deadline = time.monotonic() + timeout_s
    while cluster.sql("SELECT pg_is_in_recovery()")[0][0]:
        if time.monotonic() > deadline:
            raise AssertionError(f"{pgdata} still in recovery after {timeout_s}s")
        time.sleep(0.2)
    return cluster


def ids(cluster: PgCluster) -> list[int]:
    return [int(r[0]) for r in cluster.sql("SELECT id FROM items ORDER BY id")]


def tree_snapshot(path: Path) -> list[str]:
    """Every path under ``path`` (for "nothing was written" checks)."""
    if not path.exists():
        return ["<absent>"]
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """Asserts the exit code and a single 'janua-backup: error:' line without a traceback."""
    assert done.returncode == code, f"exit {done.returncode} (wanted {code})\n{done.stderr}"
    errors = [line for line in done.stderr.splitlines() if line.startswith("janua-backup: error:")]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle.lower() in errors[0].lower(), errors[0]
    return errors[0]


def chown_tree(path: Path) -> None:
    chown_to_postgres(path, recursive=True)


def args_for_target(kind: str, value: str | None) -> Sequence[str]:
    return [f"--target-{kind}", value] if value else []
