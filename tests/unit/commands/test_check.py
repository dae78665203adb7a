"""``check`` without servers: reading archive_command, comparing its repository with
ours, the probe object, and the steps a setup without PostgreSQL gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from janua_backup.commands import check
from janua_backup.commands.check import CheckResult, CheckStep, Status, Unconfirmed
from janua_backup.config import (
    EncryptionSettings,
    PostgresSettings,
    RepoSettings,
    S3Settings,
    Settings,
)
from janua_backup.errors import CheckFailed
from janua_backup.pipeline.crypto import key_from_passphrase
from janua_backup.spool import shell_hand_over
from tests.unit.repository.helpers import memory_repo


def ours(url: str = "s3://bucket/cluster-a", endpoint: str | None = "http://s3:8333") -> Settings:
    return Settings(repository=RepoSettings(url=url), s3=S3Settings(endpoint=endpoint))


def write(path: Path, url: str, extra: str = "") -> Path:
    path.write_text(f'[repository]\nurl = "{url}"\n\n[s3]\nendpoint = "http://s3:8333"\n{extra}')
    return path


@pytest.mark.parametrize(
    ("command", "config_path", "repo_url", "environ"),
    [
        ("/opt/v/bin/janua-backup --config /etc/j.toml wal-push %p", "/etc/j.toml", None, ()),
        (
            "janua-backup --config=/etc/j.toml --log-level debug wal-push '%p'",
            "/etc/j.toml",
            None,
            (),
        ),
        ("janua-backup --repo file:///r wal-push %p", None, "file:///r", ()),
        (
            "test ! -f x && env JANUA_BACKUP_REPO=file:///r python3 -m janua_backup wal-push %p",
            None,
            None,
            (("JANUA_BACKUP_REPO", "file:///r"),),
        ),
        (  # what `janua-backup archive-command` prints with archive_async
            shell_hand_over(None) + "/opt/v/bin/janua-backup --config /etc/j.toml wal-push %p",
            "/etc/j.toml",
            None,
            (),
        ),
    ],
)
def test_parse_finds_where_wal_push_archives(
    command: str, config_path: str | None, repo_url: str | None, environ: tuple[object, ...]
) -> None:
    parsed = check.parse_archive_command(command)
    assert (parsed.config_path, parsed.repo_url, parsed.environ) == (config_path, repo_url, environ)


@pytest.mark.parametrize(
    ("command", "needle"),
    [
        ("", "is empty"),
        ("cp %p /mnt/archive/%f", "does not run janua-backup wal-push %p"),
        ("janua-backup --config /etc/j.toml wal-push %f", "does not run janua-backup"),
        ("wal-push %p; janua-backup --version", "does not run janua-backup"),
        ("janua-backup 'wal-push %p", "cannot be parsed"),
    ],
)
def test_parse_refuses_a_command_that_does_not_push_with_janua(command: str, needle: str) -> None:
    with pytest.raises(CheckFailed, match="archive_command") as caught:
        check.parse_archive_command(command, "set archive_command = '...'")
    assert needle in caught.value.message
    assert caught.value.message.endswith("set archive_command = '...'")


def test_messages_never_show_a_secret_assigned_on_the_command_line() -> None:
    with pytest.raises(CheckFailed) as caught:
        check.parse_archive_command("AWS_SECRET_ACCESS_KEY=hunter2 aws s3 cp %p s3://b/%f")
    assert "hunter2" not in caught.value.message
    assert "AWS_SECRET_ACCESS_KEY=***" in caught.value.message


def test_same_repository_through_the_config_file_is_ok(tmp_path: Path) -> None:
    config = write(tmp_path / "j.toml", "s3://bucket/cluster-a/")
    found = check.confirm_archive_command(
        f"janua-backup --config {config} wal-push %p", ours(), Path("/pgdata")
    )
    assert found == f"runs janua-backup wal-push %p into s3://bucket/cluster-a/ (config {config})"


def test_a_relative_config_path_is_read_from_pgdata(tmp_path: Path) -> None:
    write(tmp_path / "j.toml", "s3://bucket/cluster-a")
    found = check.confirm_archive_command(
        "janua-backup --config j.toml wal-push %p", ours(), tmp_path
    )
    assert isinstance(found, str) and str(tmp_path / "j.toml") in found


def test_a_config_with_passphrase_env_loads_without_the_servers_environment(
    tmp_path: Path,
) -> None:
    config = write(
        tmp_path / "j.toml", "s3://bucket/cluster-a", '[encryption]\npassphrase_env = "PW"\n'
    )
    found = check.confirm_archive_command(
        f"janua-backup --config {config} wal-push %p", ours(), tmp_path
    )
    assert isinstance(found, str)


@pytest.mark.parametrize(
    ("command", "settings", "needle"),
    [
        ("janua-backup --config {other} wal-push %p", ours(), "s3://bucket/cluster-b, not into"),
        ("janua-backup --repo s3://bucket/x wal-push %p", ours(), "s3://bucket/x, not into"),
        ("janua-backup --config {same} wal-push %p", ours(endpoint="http://b"), "s3.endpoint"),
        ("janua-backup --config {missing} wal-push %p", ours(), "which does not exist"),
        ("janua-backup --config {bad} wal-push %p", ours(), "unknown setting"),
    ],
)
def test_another_repository_fails_naming_archive_command(
    tmp_path: Path, command: str, settings: Settings, needle: str
) -> None:
    files = {
        "other": write(tmp_path / "other.toml", "s3://bucket/cluster-b"),
        "same": write(tmp_path / "same.toml", "s3://bucket/cluster-a"),
        "missing": tmp_path / "nowhere.toml",
        "bad": write(tmp_path / "bad.toml", "s3://bucket/cluster-a", "[wal]\nnope = 1\n"),
    }
    with pytest.raises(CheckFailed, match="archive_command") as caught:
        check.confirm_archive_command(command.format(**files), settings, tmp_path)
    assert needle in caught.value.message


def test_a_command_without_config_or_repo_cannot_be_confirmed() -> None:
    found = check.confirm_archive_command("janua-backup wal-push %p", ours(), Path("/"))
    assert isinstance(found, Unconfirmed)
    assert "server's environment" in found.message


@pytest.mark.parametrize("encrypted", [False, True])
def test_probe_leaves_nothing_behind(encrypted: bool) -> None:
    repo = memory_repo(key_from_passphrase("pw") if encrypted else None)
    check.probe(repo)
    assert list(repo.storage.list()) == []
    assert check.probe_key().startswith("probe/")


def test_the_probe_works_in_a_new_passphrase_repository(tmp_path: Path) -> None:
    # No marker yet, so no salt to derive the key with: the probe uses a throwaway one
    # and creates no marker (the first backup or wal-push picks the repository's salt).
    settings = Settings(
        repository=RepoSettings(url=f"file://{tmp_path}"),
        encryption=EncryptionSettings(passphrase="pw"),
    )
    said = check._repository(settings, check._Found())
    assert "probe written, read and deleted" in said
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_summary_is_the_first_failure() -> None:
    steps = (
        CheckStep("repository", Status.OK, "fine"),
        CheckStep("archive_mode", Status.FAILED, "archive_mode is off"),
        CheckStep("archive_command", Status.FAILED, "archive_command is empty"),
    )
    assert not CheckResult(steps).ok
    assert CheckResult(steps).summary == "archive_mode is off"
    warned = CheckResult((CheckStep("archive_command", Status.WARNING, "unsure"),))
    assert warned.ok and warned.summary == "all checks passed; warning: unsure"


def test_without_postgres_settings_configuration_fails_and_later_steps_are_skipped(
    tmp_path: Path,
) -> None:
    settings = Settings(
        repository=RepoSettings(url=f"file://{tmp_path}"), postgres=PostgresSettings()
    )
    result = check.run(settings, timeout_s=1)
    assert [(s.name, s.status) for s in result.steps] == [
        ("configuration", Status.FAILED),
        ("repository", Status.OK),
        ("postgresql", Status.SKIPPED),
        ("archive_mode", Status.SKIPPED),
        ("archive_command", Status.SKIPPED),
        ("wal_switch", Status.SKIPPED),
    ]
    assert result.summary.startswith("postgres.dsn (or --dsn / JANUA_BACKUP_DSN) is not set")
    assert "no backups yet, the first wal-push or backup creates it" in result.steps[1].message
    assert list(tmp_path.rglob("*")) in ([], [tmp_path / "probe"])
