"""The shell hand-over at the start of archive_command, run by sh as PostgreSQL runs it:
exit 0 only for an ``.ok`` of this very file, everything else to ``wal-push``."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from janua_backup import spool
from janua_backup.cli import cli
from janua_backup.spool import FileIdentity, shell_hand_over
from tests.unit.test_prefetch_shell import as_postgres_would

NAME = "000000010000000000000005"


def segment(datadir: Path) -> Path:
    path = datadir / "pg_wal" / NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"wal" * 1000)
    return path


def command(fallback: str, spool_dir: str | None = None) -> list[str]:
    program = f"/bin/sh -c '{fallback}'"  # the fallback runs through exec: a program
    line = as_postgres_would(shell_hand_over(spool_dir) + program, NAME, f"pg_wal/{NAME}")
    return ["/bin/sh", "-c", line]


def run(
    datadir: Path, fallback: str, spool_dir: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(fallback, spool_dir), cwd=datadir, capture_output=True, text=True, check=False
    )


@pytest.fixture
def live_worker(tmp_path: Path) -> Iterator[int]:
    """A running process named in worker.pid, as a worker writes it."""
    with subprocess.Popen(["sleep", "30"]) as proc:
        (status_dir(tmp_path) / spool.PID_FILE).write_text(f"{proc.pid}\n")
        yield proc.pid
        proc.kill()


def status_dir(datadir: Path, spool_dir: str | None = None) -> Path:
    return spool.archive_dir(spool.resolve_root(spool_dir, datadir))


def test_an_ok_of_this_very_file_exits_0_without_wal_push(tmp_path: Path) -> None:
    path = segment(tmp_path)
    spool.write_ok(status_dir(tmp_path), NAME, FileIdentity.of(path), "already archived")
    done = run(tmp_path, "exit 9")
    assert done.returncode == 0, done.stderr
    assert f"wal-push name={NAME} outcome=already archived mode=async (shell)" in done.stderr
    # A text log line as the program writes them: UTC timestamp, level, logger.
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ INFO janua_backup.spool: wal-push .*\n", done.stderr
    )
    assert (status_dir(tmp_path) / f"{NAME}.ok").exists()  # left for the worker to prune


@pytest.mark.parametrize(
    "other",
    [
        lambda i: FileIdentity(i.size_bytes, i.mtime_ns + 1, i.inode),
        lambda i: FileIdentity(i.size_bytes + 1, i.mtime_ns, i.inode),
        lambda i: FileIdentity(i.size_bytes, i.mtime_ns, i.inode + 1),
    ],
    ids=["mtime", "size", "inode"],
)
def test_an_ok_of_another_file_under_this_name_runs_wal_push(tmp_path: Path, other: object) -> None:
    # A status that outlived its segment (a copied or rewound data directory) must
    # never vouch for other bytes: wal-push decides, and pushes the file again.
    path = segment(tmp_path)
    assert callable(other)
    spool.write_ok(status_dir(tmp_path), NAME, other(FileIdentity.of(path)), "stored")
    assert run(tmp_path, "exit 7").returncode == 7


def test_no_status_an_error_or_a_missing_file_run_wal_push(tmp_path: Path) -> None:
    path = segment(tmp_path)
    assert run(tmp_path, "exit 3").returncode == 3
    spool.write_error(status_dir(tmp_path), NAME, "S3 said no", 12)
    assert run(tmp_path, "exit 12").returncode == 12
    spool.write_ok(status_dir(tmp_path), NAME, FileIdentity.of(path), "stored")
    path.unlink()
    assert run(tmp_path, "exit 5").returncode == 5


def test_a_spool_dir_of_its_own_with_a_space(tmp_path: Path) -> None:
    path = segment(tmp_path)
    where = str(tmp_path / "my spool")
    spool.write_ok(status_dir(tmp_path, where), NAME, FileIdentity.of(path), "stored")
    assert run(tmp_path, "exit 9", where).returncode == 0
    os.utime(path, ns=(1, 1))  # another mtime: no longer this file
    assert run(tmp_path, "exit 9", where).returncode == 9


def test_while_the_worker_runs_the_shell_waits_for_the_ok(tmp_path: Path, live_worker: int) -> None:
    # In a backlog the archiver can be ahead of the worker: the shell waits for
    # the verdict instead of starting Python to wait for it.
    path = segment(tmp_path)
    with subprocess.Popen(
        command("exit 9"), cwd=tmp_path, stderr=subprocess.PIPE, text=True
    ) as waiting:
        time.sleep(0.3)
        assert waiting.poll() is None  # still waiting: no .ok yet, the worker lives
        spool.write_ok(status_dir(tmp_path), NAME, FileIdentity.of(path), "stored")
        _, err = waiting.communicate(timeout=10)
    assert waiting.returncode == 0, err
    assert "mode=async (shell)" in err


def test_an_error_or_another_files_ok_ends_the_wait_at_once(
    tmp_path: Path, live_worker: int
) -> None:
    path = segment(tmp_path)
    spool.write_error(status_dir(tmp_path), NAME, "S3 said no", 12)
    started = time.monotonic()
    assert run(tmp_path, "exit 12").returncode == 12
    spool.clear_status(status_dir(tmp_path), NAME)
    stale = FileIdentity.of(path)
    spool.write_ok(
        status_dir(tmp_path), NAME, FileIdentity(1, stale.mtime_ns, stale.inode), "stored"
    )
    assert run(tmp_path, "exit 7").returncode == 7
    assert time.monotonic() - started < 2  # no wait of ~5 s on either


def test_a_worker_that_is_gone_ends_the_wait(tmp_path: Path) -> None:
    segment(tmp_path)
    with subprocess.Popen(["true"]) as proc:
        proc.wait()
    (status_dir(tmp_path) / spool.PID_FILE).write_text(f"{proc.pid}\n")
    started = time.monotonic()
    assert run(tmp_path, "exit 4").returncode == 4
    assert time.monotonic() - started < 2


def test_archive_command_prints_the_line_for_its_config_and_needs_one(tmp_path: Path) -> None:
    config = tmp_path / "janua.toml"
    config.write_text(
        f'[repository]\nurl = "file://{tmp_path}/repo"\n\n[wal]\narchive_async = true\n'
    )
    runner = CliRunner(env={"JANUA_BACKUP_CONFIG": None})
    done = runner.invoke(cli, ["--config", str(config), "archive-command"])
    assert done.exit_code == 0, done.output
    line = done.stdout.strip()
    assert line.startswith('archive_command = \'d=pg_wal/.janua-spool; [ -O "$d" ]')
    assert line.endswith(f"--config {config} wal-push %p'")
    assert len(line) < 400  # the hand-over is a script in the spool; the line calls it
    missing = runner.invoke(cli, ["--repo", f"file://{tmp_path}/repo", "archive-command"])
    assert missing.exit_code == 3 and "needs --config" in missing.output


def test_a_script_or_spool_of_another_user_is_never_run(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give files to another user")
    path = segment(tmp_path)
    spool.write_ok(status_dir(tmp_path), NAME, FileIdentity.of(path), "stored")
    script = tmp_path / "pg_wal" / ".janua-spool" / spool.HAND_OVER_SCRIPT
    os.chown(script, 65534, 65534)
    assert run(tmp_path, "exit 9").returncode == 9  # wal-push decides (and refuses it)
    os.chown(script, 0, 0)
    assert run(tmp_path, "exit 9").returncode == 0
    os.chown(script.parent, 65534, 65534)
    assert run(tmp_path, "exit 9").returncode == 9


def test_the_script_is_rewritten_when_it_differs_and_a_link_is_replaced(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    spool.archive_dir(root)
    script = root / spool.HAND_OVER_SCRIPT
    assert script.read_text() == spool.HAND_OVER_TEXT
    assert script.stat().st_mode & 0o777 == 0o700
    script.write_text("exit 0\n")  # edited, or left by another release
    spool.archive_dir(root)
    assert script.read_text() == spool.HAND_OVER_TEXT
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    script.unlink()
    script.symlink_to(victim)
    spool.archive_dir(root)
    assert victim.read_text() == "keep me"
    assert not script.is_symlink() and script.read_text() == spool.HAND_OVER_TEXT
