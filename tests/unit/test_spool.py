"""The async push spool: status files, their identity check, pruning, the cap's inputs, the lock."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from janua_backup import spool
from janua_backup.commands import wal_push, wal_push_worker
from janua_backup.commands.common import open_repo
from janua_backup.config import PostgresSettings, RepoSettings, Settings, WalSettings
from janua_backup.errors import (
    ConfigError,
    FormatError,
    JanuaError,
    RepositoryMismatch,
    StorageError,
    WalConflict,
)
from janua_backup.repository import wal_archive

SEG_A = "000000010000000000000001"
SEG_B = "000000010000000000000002"
SEG_C = "000000010000000000000003"


@pytest.fixture
def pg_wal(tmp_path: Path) -> Path:
    wal = tmp_path / "pg_wal"
    (wal / "archive_status").mkdir(parents=True)
    return wal


@pytest.fixture
def directory(pg_wal: Path) -> Path:
    return spool.archive_dir(spool.resolve_root(None, pg_wal.parent))


def segment(pg_wal: Path, name: str, content: bytes = b"wal", *, ready: bool = True) -> Path:
    path = pg_wal / name
    path.write_bytes(content)
    if ready:
        (pg_wal / "archive_status" / f"{name}.ready").touch()
    return path


def test_default_root_is_in_pg_wal_and_made_private(pg_wal: Path, directory: Path) -> None:
    assert directory == pg_wal / ".janua-spool" / "archive"
    assert (directory.stat().st_mode & 0o777) == 0o700
    assert (directory.parent.stat().st_mode & 0o777) == 0o700
    assert spool.resolve_root("/elsewhere", pg_wal.parent) == Path("/elsewhere")


def test_an_unwritable_spool_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="spool_dir"):
        spool.archive_dir(blocker / "spool")


def test_ready_segments_oldest_first_and_segments_only(pg_wal: Path) -> None:
    status = pg_wal / "archive_status"
    for entry in (f"{SEG_B}.ready", f"{SEG_A}.ready", f"{SEG_C}.done", "00000002.history.ready"):
        (status / entry).touch()
    (status / f"{SEG_A}.partial.ready").touch()
    assert spool.ready_segments(pg_wal) == [SEG_A, SEG_B]
    assert spool.is_ready(pg_wal, SEG_B) and not spool.is_ready(pg_wal, SEG_C)
    assert spool.ready_segments(pg_wal.parent / "nowhere") == []


def test_ok_round_trips_and_stays_for_its_own_file(pg_wal: Path, directory: Path) -> None:
    path = segment(pg_wal, SEG_A)
    identity = spool.FileIdentity.of(path)
    spool.write_ok(directory, SEG_A, identity, "stored")
    status = spool.take_status(directory, SEG_A, identity)
    assert status == spool.Status(SEG_A, ok=True, detail="stored", identity=identity)
    # Left for the worker to prune once .ready is gone: a second look still finds it.
    assert spool.take_status(directory, SEG_A, identity) == status
    assert not list(directory.glob(".*janua-tmp"))


def test_an_ok_for_another_file_under_the_name_is_dropped(pg_wal: Path, directory: Path) -> None:
    path = segment(pg_wal, SEG_A)
    stale = spool.FileIdentity.of(path)
    spool.write_ok(directory, SEG_A, stale, "stored")
    path.unlink()
    fresh = spool.FileIdentity.of(segment(pg_wal, SEG_A, b"other bytes, another inode"))
    assert fresh != stale
    assert spool.take_status(directory, SEG_A, fresh) is None
    assert spool.status_names(directory) == set()


def test_an_error_is_reported_once_as_its_class(pg_wal: Path, directory: Path) -> None:
    identity = spool.FileIdentity.of(segment(pg_wal, SEG_A))
    spool.write_error(directory, SEG_A, "stored with\ndifferent content", WalConflict.exit_code)
    status = spool.take_status(directory, SEG_A, identity)
    assert status is not None and not status.ok
    assert status.detail == "stored with different content"  # one line
    error = spool.recorded_error(status)
    assert type(error) is WalConflict and error.exit_code == 22
    assert SEG_A in error.message and "different content" in error.message
    assert spool.take_status(directory, SEG_A, identity) is None  # consumed


class ElsewhereError(JanuaError):
    """A subclass outside errors.py with a shared exit code must not be picked."""


def test_recorded_error_codes_map_to_classes() -> None:
    assert ElsewhereError.exit_code == StorageError.exit_code
    storage = spool.recorded_error(spool.Status(SEG_A, ok=False, detail="down", exit_code=10))
    assert type(storage) is StorageError
    unknown = spool.recorded_error(spool.Status(SEG_A, ok=False, detail="new", exit_code=99))
    assert type(unknown) is JanuaError and unknown.exit_code == 99


def test_ok_wins_over_error_and_garbage_reads_as_absent(directory: Path) -> None:
    identity = spool.FileIdentity(16, 1, 2)
    spool.write_error(directory, SEG_A, "boom", 10)
    spool.write_ok(directory, SEG_A, identity, "already archived")
    status = spool.read_status(directory, SEG_A)
    assert status is not None and status.ok and status.detail == "already archived"
    (directory / f"{SEG_B}.ok").write_text("garbage")
    assert spool.read_status(directory, SEG_B) is None


def test_prune_keeps_the_status_of_ready_segments_only(pg_wal: Path, directory: Path) -> None:
    identity = spool.FileIdentity(1, 1, 1)
    for name in (SEG_A, SEG_B):
        spool.write_ok(directory, name, identity, "stored")
    spool.write_error(directory, SEG_C, "boom", 10)
    (directory / f".{SEG_C}.ok.janua-tmp").write_text("half")  # a killed worker's leftover
    (directory / "worker.log").write_text("kept\n")
    assert spool.status_names(directory) == {SEG_A, SEG_B, SEG_C}

    assert spool.prune(directory, [SEG_B]) == {SEG_B}
    assert spool.status_names(directory) == {SEG_B}
    assert (directory / f".{SEG_C}.ok.janua-tmp").exists()  # only with the lock held
    spool.prune(directory, [SEG_B], temp_files=True)
    assert not (directory / f".{SEG_C}.ok.janua-tmp").exists()
    assert (directory / "worker.log").exists()


def test_clear_status_removes_both(directory: Path) -> None:
    spool.write_ok(directory, SEG_A, spool.FileIdentity(1, 1, 1), "stored")
    spool.write_error(directory, SEG_A, "boom", 10)
    spool.clear_status(directory, SEG_A)
    spool.clear_status(directory, SEG_A)  # idempotent
    assert spool.read_status(directory, SEG_A) is None


def test_one_worker_holds_the_lock(directory: Path) -> None:
    assert not spool.worker_running(directory)
    with spool.WorkerLock(directory) as first:
        assert first.held
        assert spool.worker_running(directory)
        second = spool.WorkerLock(directory)
        assert not second.acquire(wait_s=0.05)
        assert not second.held
    assert not spool.worker_running(directory)


def test_the_lock_dies_with_its_process(directory: Path) -> None:
    """flock is released by the kernel when the holder dies, even by SIGKILL."""
    code = (
        "import sys, time; from pathlib import Path; from janua_backup import spool; "
        "lock = spool.WorkerLock(Path(sys.argv[1])); assert lock.acquire(); "
        "print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert spool.worker_running(directory)
        holder.kill()
        holder.wait()
        assert not spool.worker_running(directory)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout:
            holder.stdout.close()


def test_pid_file_names_the_worker(directory: Path) -> None:
    assert spool.read_pid(directory) is None
    spool.write_pid(directory)
    assert spool.read_pid(directory) == os.getpid()
    spool.clear_pid(directory)
    assert spool.read_pid(directory) is None
    (directory / spool.PID_FILE).write_text("1\n")
    spool.clear_pid(directory)  # not ours: left alone
    assert spool.read_pid(directory) == 1


def test_log_is_appended_rotated_and_its_last_line_read(directory: Path) -> None:
    assert spool.last_log_line(directory) == ""
    for text in (b"first\n", b"janua-backup: error: boom\n\n"):
        fd = spool.open_log(directory)
        os.write(fd, text)
        os.close(fd)
    assert spool.last_log_line(directory) == "janua-backup: error: boom"
    (directory / spool.LOG_FILE).write_bytes(b"x" * (spool.LOG_ROTATE_BYTES + 1))
    os.close(spool.open_log(directory))
    assert (directory / f"{spool.LOG_FILE}.1").stat().st_size > spool.LOG_ROTATE_BYTES
    assert (directory / spool.LOG_FILE).stat().st_size == 0


# -- the protocol between the worker and wal-push, in process, on a file:// repository


SYSID = 7_300_000_000_000_000_001


def wal_bytes(name: str, sysid: int = SYSID, fill: bytes = b"\x01") -> bytes:
    """A segment-like file: a valid long page header for ``name``, then filler."""
    seg_size = 16 * 1024 * 1024
    number = int(name[8:16], 16) * 256 + int(name[16:], 16)
    header = struct.pack(
        "<HHIQI4xQII", 0xD110, 0x0002, 1, number * seg_size, 0, sysid, seg_size, 8192
    )
    return header + fill * (64 * 1024)


def async_settings(tmp_path: Path, **wal: Any) -> Settings:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    return Settings(
        repository=RepoSettings(url=f"file://{repo}"),
        postgres=PostgresSettings(pgdata=str(tmp_path)),
        wal=WalSettings(archive_async=True, **wal),
    )


def stored_names(settings: Settings) -> list[str]:
    return [w.name for w in wal_archive.list_archived(open_repo(settings))]


def test_the_worker_pushes_every_ready_segment_and_marks_each(
    pg_wal: Path, directory: Path, tmp_path: Path
) -> None:
    settings = async_settings(tmp_path, async_jobs=2)
    for name in (SEG_A, SEG_B, SEG_C):
        segment(pg_wal, name, wal_bytes(name))
    spool.write_ok(directory, "0000000100000000000000FF", spool.FileIdentity(1, 1, 1), "stored")
    result = wal_push_worker.run(settings, idle_linger_s=0)
    assert (result.ran, result.stored, result.already_archived, result.failed) == (
        True, 3, 0, 0,
    )  # fmt: skip
    assert stored_names(settings) == [SEG_A, SEG_B, SEG_C]
    assert spool.status_names(directory) == {SEG_A, SEG_B, SEG_C}  # stale FF pruned
    assert spool.read_pid(directory) is None

    # The foreground call reads the verdict on its own file: no push, no worker.
    pushed = wal_push.run(settings, str(pg_wal / SEG_B))
    assert pushed.outcome == "stored"


def test_one_failed_segment_does_not_stop_the_others(
    pg_wal: Path, directory: Path, tmp_path: Path
) -> None:
    settings = async_settings(tmp_path)
    segment(pg_wal, SEG_A, wal_bytes(SEG_A))
    segment(pg_wal, SEG_B, wal_bytes(SEG_B, sysid=SYSID + 1))  # another cluster's
    segment(pg_wal, SEG_C, wal_bytes(SEG_C))
    other = pg_wal.parent / "other"
    other.write_bytes(wal_bytes(SEG_C, fill=b"\x02"))
    wal_archive.push(open_repo(settings), SEG_C, other)  # already archived, different bytes

    result = wal_push_worker.run(settings, idle_linger_s=0)
    assert (result.stored, result.failed) == (1, 2)
    assert stored_names(settings) == [SEG_A, SEG_C]
    assert wal_push.run(settings, str(pg_wal / SEG_A)).outcome == "stored"
    with pytest.raises(RepositoryMismatch, match=SEG_B):
        wal_push.run(settings, str(pg_wal / SEG_B))
    with pytest.raises(WalConflict, match=SEG_C):
        wal_push.run(settings, str(pg_wal / SEG_C))
    assert spool.status_names(directory) == {SEG_A}  # errors are reported once


def test_the_worker_refuses_a_segment_whose_header_names_another(
    pg_wal: Path, directory: Path, tmp_path: Path
) -> None:
    """A file under a name that is not its own is never stored (issue 15, finding 2)."""
    settings = async_settings(tmp_path)
    segment(pg_wal, SEG_A, wal_bytes(SEG_A))
    segment(pg_wal, SEG_B, wal_bytes(SEG_C))  # segment 3's bytes under segment 2's name
    result = wal_push_worker.run(settings, idle_linger_s=0)
    assert (result.stored, result.failed) == (1, 1)
    assert stored_names(settings) == [SEG_A]
    with pytest.raises(FormatError, match=f"the file named {SEG_B} holds segment {SEG_C}"):
        wal_push.run(settings, str(pg_wal / SEG_B))


def test_a_repeated_push_is_already_archived_and_history_files_go_sync(
    pg_wal: Path, directory: Path, tmp_path: Path
) -> None:
    settings = async_settings(tmp_path)
    segment(pg_wal, SEG_A, wal_bytes(SEG_A))
    wal_archive.push(open_repo(settings), SEG_A, pg_wal / SEG_A)
    assert wal_push_worker.run(settings, idle_linger_s=0).already_archived == 1
    assert wal_push.run(settings, str(pg_wal / SEG_A)).outcome == "already archived"

    history = pg_wal / "00000002.history"
    history.write_text("1\t0/3000000\tno recovery target specified\n")
    (pg_wal / "archive_status" / "00000002.history.ready").touch()
    assert wal_push.run(settings, str(history)).outcome == "stored"  # no worker involved
    assert spool.status_names(directory) == {SEG_A}


def test_the_cap_bounds_status_files_and_never_blocks_the_oldest(
    pg_wal: Path, directory: Path, tmp_path: Path
) -> None:
    settings = async_settings(tmp_path, async_max_segments=2, async_jobs=1)
    for name in (SEG_A, SEG_B, SEG_C):
        segment(pg_wal, name, wal_bytes(name))
    assert wal_push_worker.run(settings, idle_linger_s=0).stored == 2
    assert spool.status_names(directory) == {SEG_A, SEG_B}

    # PostgreSQL archived A (.ready -> .done): its status is pruned, C gets the place.
    (pg_wal / "archive_status" / f"{SEG_A}.ready").rename(
        pg_wal / "archive_status" / f"{SEG_A}.done"
    )
    assert wal_push_worker.run(settings, idle_linger_s=0).stored == 1
    assert spool.status_names(directory) == {SEG_B, SEG_C}

    # A failed push of the oldest left newer ones filling the spool: one of them gives way.
    (pg_wal / "archive_status" / f"{SEG_A}.done").rename(
        pg_wal / "archive_status" / f"{SEG_A}.ready"
    )
    assert wal_push_worker.run(settings, idle_linger_s=0).already_archived == 1
    assert spool.status_names(directory) == {SEG_A, SEG_B}
    assert len(spool.status_names(directory)) <= 2


def test_a_second_worker_leaves_at_once(pg_wal: Path, directory: Path, tmp_path: Path) -> None:
    settings = async_settings(tmp_path)
    segment(pg_wal, SEG_A, wal_bytes(SEG_A))
    with spool.WorkerLock(directory):
        result = wal_push_worker.run(settings, idle_linger_s=0)
    assert not result.ran
    assert spool.status_names(directory) == set()


def test_the_worker_process_exits_1_on_an_error_never_with_its_code(tmp_path: Path) -> None:
    """An orphaned worker may be reaped by a postmaster that is PID 1: any status but
    0 or 1 would read as a crashed backend there and restart the server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JANUA_BACKUP_", "AWS_"))}
    argv = [sys.executable, "-m", "janua_backup", "--repo", "bogus://x", "--pgdata", str(tmp_path)]
    done = subprocess.run(
        [*argv, "wal-push-worker"], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 1  # a ConfigError (3) from the command line would say 3
    assert "janua-backup: error: wal-push-worker: repository.url" in done.stderr
