"""``--quiet`` prints nothing on success, for every verb that can succeed without a
server: results (stdout), the restore plan, the resolved target time and the progress
line (stderr) all stay silent; warnings and an error still print."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from janua_backup.cli import cli
from janua_backup.commands.common import open_repo
from janua_backup.config import RepoSettings, Settings
from janua_backup.repository import catalog, marker
from janua_backup.repository.manifest import FileEntry, Manifest
from janua_backup.repository.objects import Repo
from tests.unit.repository.test_integrity import MIB, archive, store_backup

OLD, NEW = "20261125T120000Z", "20261125T130000Z"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file:// repository with two backups and their WAL, and a config naming it."""
    (tmp_path / "repo").mkdir()
    url = f"file://{tmp_path / 'repo'}"
    repo = open_repo(Settings(repository=RepoSettings(url=url)))
    marker.ensure(repo, system_identifier=42, wal_segment_size=MIB, pg_major=15)
    real_commit = catalog.commit

    def with_dirs(repo: Repo, m: Manifest) -> None:  # the helper's backup lacks two dirs
        dirs = (_dir("global"), _dir("base/5"))
        real_commit(repo, replace(m, files=(*dirs, *m.files)))

    monkeypatch.setattr(catalog, "commit", with_dirs)
    store_backup(repo, OLD, start_seg=2, stop_seg=2)
    store_backup(repo, NEW, start_seg=4, stop_seg=4)
    monkeypatch.undo()
    archive(repo, 2, 6)
    path = tmp_path / "janua.toml"
    path.write_text(f'[repository]\nurl = "{url}"\n')
    return path


def _dir(path: str) -> FileEntry:
    return FileEntry(path=path, kind="dir", mode=0o700, mtime_ns=1, uid=1, gid=1)


def run(config: Path, *args: str) -> Any:
    env = {"JANUA_BACKUP_CONFIG": "", "JANUA_BACKUP_REPO": ""}
    return CliRunner().invoke(cli, ["--config", str(config), *args], env=env)


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["info"],
        ["info", NEW],
        ["pin", OLD, "--reason", "audit"],
        ["unpin", OLD],
        ["expire", "--dry-run"],
        ["expire"],
        ["verify", "--repository-only"],
        ["restore", "--backup-id", NEW, "--target", "immediate"],
    ],
)
def test_quiet_prints_nothing_on_success(config: Path, tmp_path: Path, args: list[str]) -> None:
    if args[0] == "restore":
        args = [*args, "--pgdata", str(tmp_path / "restored")]
    loud = run(config, *args)
    assert loud.exit_code == 0, loud.output
    assert loud.output  # the verb does say something without --quiet
    if args[0] == "restore":
        args[-1] = str(tmp_path / "restored-quietly")
    done = run(config, "--quiet", *args)
    assert done.exit_code == 0, done.output
    assert done.stdout == ""
    # Warnings still reach cron (this repository's fake WAL holds no commit); nothing else.
    assert [line for line in done.stderr.splitlines() if " WARNING janua_backup." not in line] == []


def test_quiet_still_reports_an_error(config: Path) -> None:
    done = run(config, "--quiet", "info", "20990101T000000Z")
    assert done.exit_code != 0
    assert done.stdout == ""
    assert done.stderr.startswith("janua-backup: error: ")


def test_quiet_restore_does_not_print_the_resolved_target_time(
    config: Path, tmp_path: Path
) -> None:
    """The target is past this fake archive's last commit, so the restore is refused:
    before the refusal nothing but warnings and the one error line is printed."""
    args = ["restore", "--target-time", "2026-11-25 13:00:00 UTC", "--pgdata", str(tmp_path / "d")]
    loud = run(config, *args)
    assert "target time resolves to 2026-11-25 13:00:00Z\n" in loud.stderr
    done = run(config, "--quiet", *args)
    assert done.exit_code == loud.exit_code != 0
    lines = done.stderr.splitlines()
    assert [line for line in lines if " WARNING janua_backup." not in line] == [lines[-1]]
    assert lines[-1].startswith("janua-backup: error: target time ")


def test_a_refused_target_names_times_in_the_form_target_time_takes_back(
    config: Path, tmp_path: Path
) -> None:
    args = ["restore", "--target-time", "2026-11-25 13:00:00Z", "--pgdata", str(tmp_path / "d")]
    message = run(config, *args).stderr.splitlines()[-1]
    assert "target time 2026-11-25 13:00:00Z is not before 2026-11-25 12:00:30Z" in message
