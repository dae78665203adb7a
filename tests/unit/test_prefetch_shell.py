"""The shell hand-over at the start of restore_command, run by sh as PostgreSQL runs it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from janua_backup.prefetch import HAND_OVER_SCRIPT, PrefetchSpool, shell_hand_over

NAME = "000000010000000000000005"
NOBODY = 65534


def as_postgres_would(template: str, name: str, dest: str) -> str:
    """PostgreSQL's substitution: %f, %p and %% (other % sequences stay)."""
    out, i = [], 0
    while i < len(template):
        if template[i] == "%" and i + 1 < len(template) and template[i + 1] in "fp%":
            out.append({"f": name, "p": dest, "%": "%"}[template[i + 1]])
            i += 2
        else:
            out.append(template[i])
            i += 1
    return "".join(out)


def run(
    datadir: Path, name: str, fallback: str, spool_dir: str | None = None
) -> subprocess.CompletedProcess[str]:
    program = f"/bin/sh -c '{fallback}'"  # the fallback runs through exec: a program
    line = shell_hand_over(spool_dir) + program
    command = as_postgres_would(line, name, "pg_wal/RECOVERYXLOG")
    return subprocess.run(
        ["/bin/sh", "-c", command], cwd=datadir, capture_output=True, text=True, check=False
    )


def spool(datadir: Path) -> Path:
    """The default spool as wal-fetch makes it: mode 0700, the hand-over script installed."""
    (datadir / "pg_wal").mkdir(exist_ok=True)
    return PrefetchSpool.open(datadir / "pg_wal" / ".janua-spool" / "prefetch").path


def test_a_spooled_segment_is_renamed_into_place_and_requested(tmp_path: Path) -> None:
    where = spool(tmp_path)
    (where / NAME).write_bytes(b"segment")
    done = run(tmp_path, NAME, "exit 9")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "pg_wal" / "RECOVERYXLOG").read_bytes() == b"segment"
    assert not (where / NAME).exists()
    assert (where / "request").read_text() == NAME  # no newline: the prefetcher reads a name
    assert f"wal-fetch name={NAME} source=prefetch" in done.stderr
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ INFO janua_backup.prefetch: wal-fetch .*\n",
        done.stderr,
    )


def test_a_miss_runs_the_fallback_and_keeps_its_exit_status(tmp_path: Path) -> None:
    spool(tmp_path)
    assert run(tmp_path, NAME, "exit 1").returncode == 1
    assert run(tmp_path, "00000002.history", "exit 128").returncode == 128
    assert not (tmp_path / "pg_wal" / "RECOVERYXLOG").exists()


def test_without_a_spool_the_fallback_runs(tmp_path: Path) -> None:
    assert run(tmp_path, NAME, "exit 3").returncode == 3


def test_a_custom_spool_dir_with_a_space_and_a_percent(tmp_path: Path) -> None:
    # PostgreSQL would expand a bare %f in the path: the line doubles it.
    odd = tmp_path / "my 100%f spool"
    where = PrefetchSpool.open(odd / "prefetch").path
    (where / NAME).write_bytes(b"segment")
    (tmp_path / "pg_wal").mkdir()
    done = run(tmp_path, NAME, "exit 9", str(odd))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "pg_wal" / "RECOVERYXLOG").read_bytes() == b"segment"


def test_a_link_under_a_segments_name_is_not_handed_over(tmp_path: Path) -> None:
    where = spool(tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"not wal")
    (where / NAME).symlink_to(victim)
    assert run(tmp_path, NAME, "exit 9").returncode == 9
    assert not (tmp_path / "pg_wal" / "RECOVERYXLOG").exists()


def test_a_link_planted_as_the_request_temp_is_not_written_through(tmp_path: Path) -> None:
    where = spool(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (where / "request.new").symlink_to(victim)  # the name it had: no longer used at all
    (where / NAME).write_bytes(b"segment")
    assert run(tmp_path, NAME, "exit 9").returncode == 0
    assert victim.read_text() == "keep me"
    assert (where / "request").read_text() == NAME and not (where / "request").is_symlink()


def test_a_script_or_spool_of_another_user_is_never_run(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give files to another user")
    where = spool(tmp_path)
    (where / NAME).write_bytes(b"segment")
    script = where.parent / HAND_OVER_SCRIPT
    script.write_text("exit 0\n")  # would claim success without handing anything over
    os.chown(script, NOBODY, NOBODY)
    assert run(tmp_path, NAME, "exit 9").returncode == 9
    os.chown(script, 0, 0)
    os.chown(where.parent, NOBODY, NOBODY)
    assert run(tmp_path, NAME, "exit 9").returncode == 9
    assert (where / NAME).exists()
