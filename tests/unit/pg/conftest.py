"""A throwaway PostgreSQL 15 cluster per session, built with initdb as the ``postgres`` user.

Only the pg_control / WAL header / datadir / recovery tests that read real
files use it; they are skipped when the PostgreSQL binaries are not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_BIN = Path(os.environ.get("JANUA_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


@dataclass(frozen=True, slots=True)
class Cluster:
    pgdata: Path
    controldata: dict[str, str]  # pg_controldata output, label -> value


def run_as_postgres(*args: str) -> str:
    """Run a PostgreSQL binary as the postgres user (initdb and postgres refuse root)."""
    command = [str(PG_BIN / args[0]), *args[1:]]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, f"{command} failed: {done.stderr}"
    return done.stdout


def give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def _initdb(root: Path, name: str, *extra: str) -> Cluster:
    pgdata = root / name
    run_as_postgres("initdb", "-N", "-A", "trust", "-U", "postgres", "-D", str(pgdata), *extra)
    lines = run_as_postgres("pg_controldata", "-D", str(pgdata)).splitlines()
    controldata = {
        label.strip(): value.strip() for label, _, value in (ln.partition(":") for ln in lines)
    }
    return Cluster(pgdata, controldata)


@pytest.fixture(scope="session")
def pg_root() -> Iterator[Path]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN}")
    root = Path(tempfile.mkdtemp(prefix="janua-pg-unit-"))
    give_to_postgres(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster(pg_root: Path) -> Cluster:
    """initdb with the default 16 MiB WAL segments."""
    return _initdb(pg_root, "pgdata-16mib")


@pytest.fixture(scope="session")
def pg_cluster_1mib(pg_root: Path) -> Cluster:
    return _initdb(pg_root, "pgdata-1mib", "--wal-segsize=1")
