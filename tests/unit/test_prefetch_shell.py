"""The shell hand-over at the start of restore_command, run by sh as PostgreSQL runs it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from janua_backup.prefetch import shell_hand_over

NAME = "000000010000000000000005"


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


def run(datadir: Path, name: str, fallback: str) -> subprocess.CompletedProcess[str]:
    program = f"/bin/sh -c '{fallback}'"  # the fallback runs through exec: a program
    command = as_postgres_would(shell_hand_over(None) + program, name, "pg_wal/RECOVERYXLOG")
    return subprocess.run(
        ["/bin/sh", "-c", command], cwd=datadir, capture_output=True, text=True, check=False
    )


def spool(datadir: Path) -> Path:
    path = datadir / "pg_wal" / ".janua-spool" / "prefetch"
    path.mkdir(parents=True)
    return path


def test_a_spooled_segment_is_renamed_into_place_and_requested(tmp_path: Path) -> None:
    where = spool(tmp_path)
    (where / NAME).write_bytes(b"segment")
    done = run(tmp_path, NAME, "exit 9")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "pg_wal" / "RECOVERYXLOG").read_bytes() == b"segment"
    assert not (where / NAME).exists()
    assert (where / "request").read_text() == NAME  # no newline: the prefetcher reads a name
    assert f"wal-fetch name={NAME} source=prefetch" in done.stderr


def test_a_miss_runs_the_fallback_and_keeps_its_exit_status(tmp_path: Path) -> None:
    spool(tmp_path)
    assert run(tmp_path, NAME, "exit 1").returncode == 1
    assert run(tmp_path, "00000002.history", "exit 128").returncode == 128
    assert not (tmp_path / "pg_wal" / "RECOVERYXLOG").exists()


def test_without_a_spool_the_fallback_runs(tmp_path: Path) -> None:
    assert run(tmp_path, NAME, "exit 3").returncode == 3


def test_a_custom_spool_dir_is_quoted(tmp_path: Path) -> None:
    odd = tmp_path / "my spool"
    assert "'" in shell_hand_over(str(odd)) and "my spool/prefetch" in shell_hand_over(str(odd))
