"""restore --delta on local directories: the refusals that touch nothing, what the cleaning
removes and keeps, and which files are reused (size and SHA-256, never mtime)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from janua_backup.commands import restore_delta
from janua_backup.confined import Tree
from janua_backup.errors import InputError
from janua_backup.repository.manifest import FileEntry, Manifest
from tests.unit.pg.builders import control_bytes
from tests.unit.repository.helpers import manifest

SYSID = 42  # the helpers' manifest's cluster


def file_entry(path: str, data: bytes) -> FileEntry:
    return FileEntry(
        path=path,
        kind="file",
        mode=0o600,
        mtime_ns=1_700_000_000_000_000_000,
        uid=os.getuid(),
        gid=os.getgid(),
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        object="data/000001",
    )


def dir_entry(path: str) -> FileEntry:
    return FileEntry(path=path, kind="dir", mode=0o700, mtime_ns=1, uid=0, gid=0)


def backup_of(files: dict[str, bytes], dirs: tuple[str, ...]) -> Manifest:
    entries = [file_entry(p, d) for p, d in files.items()] + [dir_entry(d) for d in dirs]
    return replace(manifest(), files=tuple(sorted(entries, key=lambda e: e.path)))


def data_dir(root: Path, files: dict[str, bytes], sysid: int = SYSID) -> Path:
    for path, data in {**files, "global/pg_control": control_bytes(sysid=sysid)}.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return root


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_directory_of_another_cluster_is_refused(tmp_path: Path) -> None:
    root = data_dir(tmp_path / "data", {"PG_VERSION": b"15\n"}, sysid=7)
    before = snapshot(root)
    with pytest.raises(InputError, match=r"cluster 7, but backup .* is of cluster 42"):
        restore_delta.check_target(root, manifest(), {})
    assert snapshot(root) == before


def test_a_directory_without_a_control_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="no global/pg_control"):
        restore_delta.check_target(tmp_path, manifest(), {})


@pytest.mark.parametrize(
    ("pid_file", "message"),
    [(f"{os.getpid()}\n/data\n", "PostgreSQL is running"), ("garbage\n", "names no process")],
)
def test_a_live_or_unreadable_postmaster_pid_is_refused(
    tmp_path: Path, pid_file: str, message: str
) -> None:
    root = data_dir(tmp_path / "data", {})
    (root / "postmaster.pid").write_text(pid_file)
    before = snapshot(root)
    with pytest.raises(InputError, match=message):
        restore_delta.check_target(root, manifest(), {})
    assert snapshot(root) == before


def test_a_stale_postmaster_pid_and_a_set_aside_control_file_are_accepted(
    tmp_path: Path,
) -> None:
    root = data_dir(tmp_path / "data", {})
    (root / "postmaster.pid").write_text(f"{dead_pid()}\n")
    restore_delta.disable_start(root)  # as an interrupted delta restore left it
    assert not (root / "global/pg_control").exists()
    restore_delta.check_target(root, manifest(), {})


def test_a_tablespace_location_elsewhere_must_be_empty(tmp_path: Path) -> None:
    root = data_dir(tmp_path / "data", {})
    location = tmp_path / "ts"
    (location / "PG_15_1").mkdir(parents=True)
    links = {"pg_tblspc/16390": str(location)}
    with pytest.raises(InputError, match="not empty"):
        restore_delta.check_target(root, manifest(), links)
    (root / "pg_tblspc").mkdir()
    (root / "pg_tblspc/16390").symlink_to(location)
    restore_delta.check_target(root, manifest(), links)  # the same tablespace: delta into it


def test_clean_removes_what_the_backup_lacks_and_all_old_wal(tmp_path: Path) -> None:
    kept = {"PG_VERSION": b"15\n", "base/1/100": b"x" * 100}
    m = backup_of(kept, ("base", "base/1", "global", "pg_wal", "pg_wal/archive_status"))
    root = data_dir(tmp_path / "data", kept)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("not ours")
    extra = {
        "base/1/200": b"dropped table",
        "base/2/300": b"dropped database",
        "pg_wal/000000010000000000000003": b"old wal",
        "pg_wal/00000002.history": b"a timeline the archive lacks",
        "pg_wal/archive_status/000000010000000000000003.done": b"",
        "backup_label": b"old",
        "recovery.signal": b"",
        "postmaster.pid": b"1\n",
    }
    data_dir(root, extra)
    (root / "elsewhere").symlink_to(outside)
    restore_delta.disable_start(root)
    removed = restore_delta.clean(root, m, {})
    assert removed == len(extra) + 1  # base/2 counts once, its file with it; the link once
    assert sorted(snapshot(root)) == sorted(
        [
            "PG_VERSION",
            "base",
            "base/1",
            "base/1/100",
            "global",
            restore_delta.CONTROL_SET_ASIDE,
            "pg_wal",
            "pg_wal/archive_status",
        ]
    )
    assert (outside / "precious").read_text() == "not ours"  # a link goes, never its target


def test_compare_reuses_only_files_with_the_same_size_and_sha256(tmp_path: Path) -> None:
    wanted = {
        "same": b"s" * 64,
        "changed_same_size": b"n" * 64,
        "changed_size": b"m" * 64,
        "missing": b"gone",
        "global/pg_control": b"c" * 64,
    }
    m = backup_of(wanted, ("global",))
    root = tmp_path / "data"
    data_dir(root, {"same": b"s" * 64, "changed_same_size": b"N" * 64, "changed_size": b"m"})
    (root / "global/pg_control").write_bytes(b"c" * 64)  # equal, yet always fetched
    mtime = (root / "changed_same_size").stat().st_mtime_ns
    os.utime(root / "same", ns=(mtime, mtime))
    found = restore_delta.compare(m, Tree(root), jobs=2, chown=False)
    assert [e.path for e in found.reused] == ["same"]
    assert found.reused_bytes == 64
    assert [e.path for e in found.fetch] == sorted(set(wanted) - {"same"})
    for entry in found.fetch:  # stale copies are gone, so the fetch creates them anew
        assert not (root / entry.path).exists()
    reused = (root / "same").stat()
    assert (reused.st_mode & 0o777, reused.st_mtime_ns) == (0o600, m.files[-1].mtime_ns)
