"""Flags the command line refuses before any setting is loaded or anything is opened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from janua_backup.cli import cli


def run(tmp_path: Path, *args: str) -> Any:
    # No repository anywhere: a flag that got through would fail later with another code.
    env = {"JANUA_BACKUP_CONFIG": "", "JANUA_BACKUP_REPO": ""}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["restore", "--target-time", ""], "--target-time"),
        (["restore", "--target-lsn", ""], "--target-lsn"),
        (["restore", "--target-xid", ""], "--target-xid"),
        (["restore", "--target-name", ""], "--target-name"),
        (["restore", "--target-time", "2024-05-01 12:00", "--timezone", ""], "--timezone"),
        (["verify", "--target-time", ""], "--target-time"),
        (["verify", "--target-lsn", ""], "--target-lsn"),
        (["verify", "--target-time", "2024-05-01 12:00", "--timezone", ""], "--timezone"),
    ],
)
def test_an_empty_target_exits_4_with_one_sentence(
    tmp_path: Path, args: list[str], option: str
) -> None:
    if args[0] == "restore":
        args = [*args, "--pgdata", str(tmp_path / "data")]
    done = run(tmp_path, *args)
    assert done.exit_code == 4, done.output
    assert done.output == (
        f"janua-backup: error: {option} is empty; give a value or leave the option out\n"
    )
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["check", "--timeout", "nan"],
        ["expire", "--window-days", "nan"],
        ["verify", "--timeout", "nan"],
        ["verify", "--timeout", "inf"],
        ["verify", "--jobs", "100000"],
        ["restore", "--pgdata", "x", "--jobs", "-1"],
        ["backup", "--jobs", "5000"],
    ],
)
def test_numbers_without_bounds_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    done = run(tmp_path, *args)
    assert done.exit_code == 2, done.output
    assert "Invalid value for" in done.output


@pytest.mark.parametrize(
    "args",
    [
        ["pin", "../../x"],
        ["unpin", "../../x"],
        ["info", "../../x"],
        ["restore", "--backup-id", "../../x"],
        ["verify", "--repository-only", "--backup-id", "a/b"],
        ["verify", "--backup-id", ""],
    ],
)
def test_a_backup_id_that_is_a_path_exits_4_before_the_repository_opens(
    tmp_path: Path, args: list[str]
) -> None:
    # On a file:// repository this was a ValueError traceback from the driver.
    repo = tmp_path / "repo"
    repo.mkdir()
    if args[0] == "restore":
        args = [*args, "--pgdata", str(tmp_path / "data")]
    done = run(tmp_path, "--repo", f"file://{repo}", *args)
    assert done.exit_code == 4, done.output
    assert done.output.startswith("janua-backup: error: ") and "is not a backup id" in done.output
    assert done.output.count("\n") == 1
    assert list(repo.iterdir()) == []
