from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from janua_backup.errors import BackupError, InputError
from janua_backup.pg import datadir
from janua_backup.pg.datadir import (
    DataEntry,
    EntryKind,
    tablespace_locations,
    tablespace_version_dir,
    walk,
)

from .builders import control_bytes
from .conftest import Cluster

VERSION_DIR = "PG_15_202209061"


def touch(root: Path, *paths: str, content: bytes = b"x") -> None:
    for rel in paths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


PGDATA_FILES = (
    "global/1262",
    "global/pg_filenode.map",
    "global/pg_internal.init",
    "postgresql.conf",
    "postgresql.auto.conf",
    # base/5: a logged table, an unlogged one (with its init fork), temp relations
    "base/5/1259",
    "base/5/1259_fsm",
    "base/5/16384",
    "base/5/16384.1",
    "base/5/16384_fsm",
    "base/5/16384_vm",
    "base/5/16384_init",
    "base/5/16390",
    "base/5/16390_vm",
    "base/5/t3_16400",
    "base/5/t3_16400_fsm",
    "base/5/pg_internal.init",
    "base/5/pg_internal.init.4242",  # relcache temp file
    "base/5/PG_VERSION",
    "base/pgsql_tmp/pgsql_tmp4242.0",
    # directories kept empty
    "pg_wal/000000010000000000000001",
    "pg_wal/archive_status/000000010000000000000001.done",
    "pg_wal/summaries/0000000100000000010000280000000001000100.summary",  # PostgreSQL 17
    "pg_replslot/slot1/state",
    "pg_dynshmem/mmap.1",
    "pg_notify/0000",
    "pg_serial/0000",
    "pg_snapshots/00000003-00000002-1",
    "pg_subtrans/0000",
    "pg_stat_tmp/pgss_query_texts.stat",
    "pg_stat/pgstat.stat",
    # files that describe the running server or an earlier backup/restore
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "backup_manifest",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "recovery.signal",
    "standby.signal",
    "pgsql_tmp_stray",
)


def make_pgdata(tmp_path: Path) -> Path:
    """A data directory with one example of every rule, and a tablespace."""
    pgdata = tmp_path / "pgdata"
    touch(pgdata, "PG_VERSION", content=b"15\n")
    touch(pgdata, "global/pg_control", content=control_bytes())
    touch(pgdata, *PGDATA_FILES)
    location = tmp_path / "tablespace"
    touch(
        location,
        f"{VERSION_DIR}/5/16501",
        f"{VERSION_DIR}/5/16502",
        f"{VERSION_DIR}/5/16502_init",
        f"{VERSION_DIR}/pgsql_tmp/pgsql_tmp1.0",
        "PG_14_202107181/5/999",  # another server version sharing the location
    )
    (pgdata / "pg_tblspc").mkdir()
    (pgdata / "pg_tblspc" / "16500").symlink_to(location)
    return pgdata


EXPECTED = [
    ("PG_VERSION", EntryKind.FILE),
    ("base", EntryKind.DIR),
    ("base/5", EntryKind.DIR),
    ("base/5/1259", EntryKind.FILE),
    ("base/5/1259_fsm", EntryKind.FILE),
    ("base/5/16384_init", EntryKind.FILE),
    ("base/5/16390", EntryKind.FILE),
    ("base/5/16390_vm", EntryKind.FILE),
    ("base/5/PG_VERSION", EntryKind.FILE),
    ("global", EntryKind.DIR),
    ("global/1262", EntryKind.FILE),
    ("global/pg_filenode.map", EntryKind.FILE),
    ("pg_dynshmem", EntryKind.DIR),
    ("pg_notify", EntryKind.DIR),
    ("pg_replslot", EntryKind.DIR),
    ("pg_serial", EntryKind.DIR),
    ("pg_snapshots", EntryKind.DIR),
    ("pg_stat", EntryKind.DIR),
    ("pg_stat/pgstat.stat", EntryKind.FILE),
    ("pg_stat_tmp", EntryKind.DIR),
    ("pg_subtrans", EntryKind.DIR),
    ("pg_tblspc", EntryKind.DIR),
    ("pg_tblspc/16500", EntryKind.SYMLINK),
    (f"pg_tblspc/16500/{VERSION_DIR}", EntryKind.DIR),
    (f"pg_tblspc/16500/{VERSION_DIR}/5", EntryKind.DIR),
    (f"pg_tblspc/16500/{VERSION_DIR}/5/16501", EntryKind.FILE),
    (f"pg_tblspc/16500/{VERSION_DIR}/5/16502_init", EntryKind.FILE),
    ("pg_wal", EntryKind.DIR),
    ("pg_wal/archive_status", EntryKind.DIR),
    ("pg_wal/summaries", EntryKind.DIR),
    ("postgresql.auto.conf", EntryKind.FILE),
    ("postgresql.conf", EntryKind.FILE),
    ("global/pg_control", EntryKind.FILE),  # last, as PostgreSQL copies it
]


def test_walk_applies_every_exclusion_rule(tmp_path: Path) -> None:
    pgdata = make_pgdata(tmp_path)
    entries = list(walk(pgdata))
    assert [(e.path, e.kind) for e in entries] == EXPECTED
    by_path = {e.path: e for e in entries}
    link = by_path["pg_tblspc/16500"]
    assert link.link_target == str(tmp_path / "tablespace")
    assert link.size_bytes == 0
    assert by_path["global/pg_control"].size_bytes == 8192
    assert by_path["base"].size_bytes == 0 and by_path["base"].link_target is None
    assert list(walk(pgdata)) == entries  # deterministic


def test_entries_carry_ownership_mode_and_mtime(tmp_path: Path) -> None:
    pgdata = make_pgdata(tmp_path)
    conf = pgdata / "postgresql.conf"
    conf.chmod(0o640)
    os.utime(conf, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    entry = next(e for e in walk(pgdata) if e.path == "postgresql.conf")
    assert entry == DataEntry(
        path="postgresql.conf",
        kind=EntryKind.FILE,
        size_bytes=1,
        mode=0o640,
        uid=os.getuid(),
        gid=os.getgid(),
        user=entry.user,
        group=entry.group,
        mtime_ns=1_700_000_000_123_456_789,
    )
    assert entry.user is not None and entry.group is not None
    if os.geteuid() == 0:
        os.chown(conf, 54321, 54321)  # no such user or group here
        entry = next(e for e in walk(pgdata) if e.path == "postgresql.conf")
        assert (entry.uid, entry.gid, entry.user, entry.group) == (54321, 54321, None, None)


def test_tablespace_locations_and_version_dir(tmp_path: Path) -> None:
    pgdata = make_pgdata(tmp_path)
    (pgdata / "pg_tblspc" / "16600").mkdir()  # an in-place tablespace: no separate location
    assert tablespace_locations(pgdata) == {16500: tmp_path / "tablespace"}
    assert tablespace_version_dir(pgdata) == VERSION_DIR
    assert tablespace_locations(tmp_path / "empty") == {}


def test_symlinked_pg_wal_and_stats_dirs_are_kept_as_directories(tmp_path: Path) -> None:
    pgdata = make_pgdata(tmp_path)
    elsewhere = tmp_path / "wal-elsewhere"
    (pgdata / "pg_wal").rename(elsewhere)
    (pgdata / "pg_wal").symlink_to(elsewhere)
    (pgdata / "pg_stat_tmp").rename(tmp_path / "tmpfs")
    (pgdata / "pg_stat_tmp").symlink_to(tmp_path / "tmpfs")
    assert [(e.path, e.kind) for e in walk(pgdata)] == EXPECTED


def test_other_symlinks_and_special_files_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pgdata = make_pgdata(tmp_path)
    (pgdata / "log").symlink_to(tmp_path)
    os.mkfifo(pgdata / "a_fifo")
    with caplog.at_level(logging.WARNING, logger=datadir.__name__):
        assert [(e.path, e.kind) for e in walk(pgdata)] == EXPECTED
    assert "symbolic link outside pg_tblspc path=log" in caplog.text
    assert "special file path=a_fifo" in caplog.text


def test_files_and_directories_that_vanish_during_the_walk_are_skipped(tmp_path: Path) -> None:
    pgdata = make_pgdata(tmp_path)
    touch(pgdata, "base/6/2000", "base/7/3000")
    seen = []
    for entry in walk(pgdata):
        seen.append(entry.path)
        if entry.path == "base/5/1259":  # base/5 is listed: drop a table that comes later
            (pgdata / "base/5/16390_vm").unlink()
            (pgdata / "base/5/16390").unlink()
        if entry.path == "base/6":  # yielded, not yet listed: drop the database
            (pgdata / "base/6/2000").unlink()
            (pgdata / "base/6").rmdir()
        if entry.path == "base/5/PG_VERSION":  # base is listed: base/7 goes before its turn
            (pgdata / "base/7/3000").unlink()
            (pgdata / "base/7").rmdir()
    assert "base/5/16390" not in seen and "base/5/16390_vm" not in seen
    assert "base/6" in seen and "base/6/2000" not in seen
    assert "base/7" not in seen
    assert seen[-1] == "global/pg_control"


def test_other_os_errors_stop_the_walk_naming_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pgdata = make_pgdata(tmp_path)
    real_listdir = os.listdir

    def listdir(path: Path) -> list[str]:
        if Path(path).name == "global":
            raise PermissionError(13, "Permission denied")
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    with pytest.raises(BackupError, match="global: Permission denied") as caught:
        list(walk(pgdata))
    assert caught.value.exit_code == 31


def test_walk_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        list(walk(tmp_path / "nope"))


def test_walk_a_real_cluster(pg_cluster: Cluster) -> None:
    entries = list(walk(pg_cluster.pgdata))
    paths = [e.path for e in entries]
    assert paths[-1] == "global/pg_control"
    assert "pg_wal" in paths and "pg_wal/archive_status" in paths
    assert not [p for p in paths if p.startswith("pg_wal/0")]
    assert not [p for p in paths if p.endswith("pg_internal.init")]
    assert {"PG_VERSION", "postgresql.conf", "base/1/PG_VERSION"} <= set(paths)
    files = [e for e in entries if e.kind is EntryKind.FILE]
    assert all(e.mode & 0o077 in (0, 0o040) for e in files)  # initdb's 0600 (or 0640 with -g)
    assert len(paths) == len(set(paths))
