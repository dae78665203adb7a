"""scripts/janua-extract against a real cluster's backups: the way out without janua-backup.

A PostgreSQL 15 cluster with a tablespace, archiving into an encrypted, zstd file://
repository with 1 MiB parts, is backed up (full, then incremental). The incremental is
restored once by ``janua-backup restore`` and once by ``janua-extract`` run by the system
Python with ``-I`` (where janua_backup cannot be imported): both data directories must
hold the same bytes, modes and links. The extracted one is then started with
``janua-extract ... wal %f %p`` as its restore_command and must return exactly the rows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from localstack import chown_to_postgres

from tests.integration import janua
from tests.integration.janua import RepoSpec
from tests.integration.test_pitr import make_key

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "janua-extract"
PYTHON = Path("/usr/bin/python3")
PART = 1024 * 1024
SKIP_RESTORE_ONLY = {"recovery.signal", "postgresql.auto.conf", "tablespace_map"}


def tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """path -> (mode, bytes or None for a directory), through pg_tblspc links."""
    found: dict[str, tuple[int, bytes | None]] = {}

    def walk(directory: Path, prefix: str) -> None:
        for child in sorted(directory.iterdir()):
            rel = prefix + child.name
            if child.is_symlink():
                assert rel.startswith("pg_tblspc/"), rel
                walk(child.resolve(), rel + "/")
                continue
            mode = child.stat().st_mode & 0o7777
            if child.is_dir():
                found[rel] = (mode, None)
                walk(child, rel + "/")
            else:
                found[rel] = (mode, child.read_bytes())

    walk(root, "")
    return found


def extract(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PYTHON), "-I", str(SCRIPT), *args],
        capture_output=True, text=True, cwd=cwd, timeout=300, check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )  # fmt: skip


def test_extracted_backup_equals_restore_and_recovers_the_rows(
    pg_factory: Any, janua_exe: Path
) -> None:
    probe = [str(PYTHON), "-I", "-c", "import cryptography; import janua_backup"]
    done = subprocess.run(probe, capture_output=True, text=True, check=False)
    if "No module named 'cryptography'" in done.stderr or not PYTHON.exists():
        pytest.skip("no system Python with cryptography")
    assert "No module named 'janua_backup'" in done.stderr, done.stderr

    home = pg_factory.empty_dir()
    repo_dir = pg_factory.empty_dir()
    key = make_key(home)
    spec = RepoSpec(url=f"file://{repo_dir}", codec="zstd", key_file=key)
    spec = replace(spec, extra=f"[backup]\npart_size_bytes = {PART}\n")
    config = janua.write_config(home / "janua.toml", spec)
    cluster = janua.archiving_cluster(pg_factory, janua_exe, config)
    janua.write_config(config, spec, pgdata=cluster.pgdata, dsn=cluster.dsn)
    space = pg_factory.empty_dir()
    cluster.sql(f"CREATE TABLESPACE extra LOCATION '{space}'")
    cluster.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    cluster.sql(
        "CREATE TABLE bulk TABLESPACE extra AS SELECT g AS id, md5(g::text) || repeat('x', 170)"
        " AS pad FROM generate_series(1, 20000) g"
    )  # ~4.5 MiB: in parts
    janua.insert_rows(cluster, 1, 5, pause_s=0)
    full = janua.run_json(janua_exe, config, "backup")
    cluster.sql("UPDATE bulk SET pad = 'changed' WHERE id = 7")
    janua.insert_rows(cluster, 6, 5, pause_s=0)
    incr = janua.run_json(janua_exe, config, "backup", "--type", "incr")
    assert incr["depends_on"] == full["backup_id"]
    janua.insert_rows(cluster, 11, 5, pause_s=0)
    janua.switch_and_wait_archived(cluster)
    expected_bulk = cluster.sql("SELECT count(*), sum(id), max(pad) FROM bulk")
    cluster.stop()
    # janua-backup restore puts the tablespace where it was: make that place empty.
    shutil.move(space, space.with_name(space.name + ".old"))
    space.mkdir(mode=0o700)
    chown_to_postgres(space)

    restored = pg_factory.empty_dir() / "restored"
    janua.ok(janua.run(janua_exe, config, "restore", "--pgdata", str(restored)))
    work = pg_factory.empty_dir()
    extracted, spaces = work / "extracted", work / "spaces"
    listed = extract(str(repo_dir), "--key-file", str(key), "list", cwd=work)
    assert listed.returncode == 0, listed.stderr
    assert incr["backup_id"] in listed.stdout and full["backup_id"] in listed.stdout
    args = ["backup", incr["backup_id"], str(extracted), "--tablespace-dir", str(spaces)]
    done = extract(str(repo_dir), "--key-file", str(key), *args, cwd=work)
    assert done.returncode == 0, done.stderr

    mine, theirs = tree(extracted), tree(restored)
    assert {p for p in theirs if p not in mine} == {"recovery.signal"}
    assert set(mine) <= set(theirs)
    different = [p for p in mine if mine[p] != theirs[p] and p not in SKIP_RESTORE_ONLY]
    assert different == []
    assert len([p for p in mine if p.startswith("pg_tblspc/") and mine[p][1]]) > 0
    oid = next(iter(os.listdir(extracted / "pg_tblspc")))
    assert os.readlink(extracted / "pg_tblspc" / oid) == str(spaces / oid)
    assert (extracted / "tablespace_map").read_text() == f"{oid} {spaces / oid}\n"

    script = work / "janua-extract"  # where postgres can read it
    shutil.copy(SCRIPT, script)
    command = f"{PYTHON} -I {script} {repo_dir} --key-file {key} wal %f %p"
    with (extracted / "postgresql.auto.conf").open("a") as conf:
        conf.write(f"restore_command = '{command}'\n")
    (extracted / "recovery.signal").touch()
    chown_to_postgres(work, recursive=True)
    started = janua.start_restored(pg_factory, extracted)
    assert janua.ids(started) == list(range(1, 16))
    assert started.sql("SELECT count(*), sum(id), max(pad) FROM bulk") == expected_bulk
    assert started.sql("SELECT pad FROM bulk WHERE id = 7") == [("changed",)]
