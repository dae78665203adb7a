"""Global options before or after the verb, the one after winning; ``verify --repository-only``
and the old ``verify --repo`` spelling; ``archive-command --value``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from janua_backup.cli import cli
from janua_backup.commands.check import Unconfirmed, confirm_archive_command
from janua_backup.commands.common import archive_command
from janua_backup.config import load
from janua_backup.pg.recovery import quote_setting

ENV = {"JANUA_BACKUP_CONFIG": "", "JANUA_BACKUP_REPO": "", "PGDATA": ""}


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), env=ENV, catch_exceptions=False)


@pytest.fixture
def repo(tmp_path: Path) -> str:
    (tmp_path / "repo").mkdir()
    return f"file://{tmp_path}/repo"


@pytest.mark.parametrize(
    "shape",
    [
        ["--repo", "{r}", "--json", "list"],
        ["--repo", "{r}", "list", "--json"],
        ["--json", "list", "--repo", "{r}"],
        ["list", "--repo", "{r}", "--json"],
        ["--log-level", "error", "list", "--json", "--repo", "{r}", "--log-format", "json"],
    ],
)
def test_global_options_go_before_or_after_the_verb(repo: str, shape: list[str]) -> None:
    done = run(*(arg.format(r=repo) for arg in shape))
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["repository"] == repo


def test_given_in_both_places_the_one_after_the_verb_wins(tmp_path: Path, repo: str) -> None:
    before = f"file://{tmp_path}/elsewhere"
    done = run("--repo", before, "list", "--repo", repo, "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["repository"] == repo
    config = tmp_path / "janua.toml"
    config.write_text(f'[repository]\nurl = "{repo}"\n')
    done = run("--config", str(tmp_path / "missing.toml"), "list", "--config", str(config))
    assert done.exit_code == 0, done.output
    assert repo in done.stdout
    assert "the one after the verb wins" in " ".join(run("--help").stdout.split())
    assert "wins over one before the verb" in " ".join(run("list", "--help").stdout.split())


def test_quiet_after_the_verb_prints_nothing_on_success(repo: str) -> None:
    done = run("list", "--repo", repo, "--quiet")
    assert (done.exit_code, done.stdout) == (0, "")


def test_restore_keeps_its_own_pgdata(tmp_path: Path, repo: str) -> None:
    # restore --pgdata is the directory to restore into, not the global postgres.pgdata.
    done = run("--repo", repo, "restore", "--pgdata", str(tmp_path / "data"))
    assert done.exit_code == 3, done.output
    assert "restore needs --config" in done.output


def test_verify_repository_only_and_the_old_spelling(repo: str) -> None:
    new = run("verify", "--repository-only", "--repo", repo, "--json")
    old = run("--repo", repo, "verify", "--repo", "--json")
    assert new.exit_code == old.exit_code == 40  # an empty directory is no repository
    assert json.loads(old.stdout)["problems"] == json.loads(new.stdout)["problems"]
    assert json.loads(old.stdout)["repository"] == repo
    warnings = [line for line in old.stderr.splitlines() if "deprecated" in line]
    assert warnings == [
        "janua-backup: warning: verify --repo without a URL is deprecated; "
        "use verify --repository-only"
    ]
    assert "deprecated" not in new.stderr
    # The bare flag before another option, and --repo URL after the verb, both still work.
    both = run("verify", "--repo", "--repo", repo, "--json")
    assert both.exit_code == 40 and json.loads(both.stdout)["repository"] == repo


def test_archive_command_value_is_the_command_check_accepts(tmp_path: Path, repo: str) -> None:
    config = tmp_path / "janua.toml"
    config.write_text(f'[repository]\nurl = "{repo}"\n')
    settings = load(str(config), {})
    value = run("--config", str(config), "archive-command", "--value")
    line = run("--config", str(config), "archive-command")
    assert value.exit_code == line.exit_code == 0, value.output + line.output
    assert value.stdout == archive_command(settings) + "\n"
    assert line.stdout == f"archive_command = {quote_setting(value.stdout.strip())}\n"
    # What SHOW archive_command returns after ALTER SYSTEM SET archive_command = '<value>'.
    outcome = confirm_archive_command(value.stdout.strip(), settings, tmp_path)
    assert not isinstance(outcome, Unconfirmed), outcome.message
