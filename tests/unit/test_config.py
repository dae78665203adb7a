"""The config file: what it refuses, in one sentence naming the key, and what it never says.

``archive_command`` runs janua-backup with this file on every segment, and its errors
land in the PostgreSQL log: a refusal must name the key and the fix, and never repeat
a value that may be a secret.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from janua_backup import config
from janua_backup.cli import cli
from janua_backup.commands.common import open_storage
from janua_backup.config import Settings, parse_repo_url
from janua_backup.errors import ConfigError

SENTINEL = "s3cr3t-Sentinel-42"
NUMBER = 987654321987


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def refusal(path: Path | None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        config.load(str(path) if path else None, environ or {})
    assert caught.value.exit_code == 3
    message = caught.value.message
    assert "\n" not in message
    return message


def run_cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env=env or {}, catch_exceptions=False)


# --- the repository URL ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme", "where"),
    [
        ("file:///var/backups/pg", "file", "/var/backups/pg"),
        ("file://localhost/var/backups/pg", "file", "/var/backups/pg"),
        ("file:///var/backups/with%20space", "file", "/var/backups/with space"),
        ("s3://bucket", "s3", ""),
        ("s3://bucket/", "s3", ""),
        ("s3://bucket/a/b", "s3", "a/b"),
        ("s3://bucket/a/b/", "s3", "a/b"),
    ],
)
def test_repository_urls_that_are_read(url: str, scheme: str, where: str) -> None:
    parsed = parse_repo_url(url)
    assert parsed.scheme == scheme
    assert (parsed.path if scheme == "file" else parsed.prefix) == where


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        # urllib reads "relative" as a host name: this meant /path, silently.
        ("file://relative/path", "file:///abs/path"),
        ("file:relative", "absolute path"),
        # "//" makes a pushed segment invisible to `list` on servers that collapse it.
        ("s3://bucket//prefix", "single slashes"),
        ("s3://bucket/a//b", "single slashes"),
        ("s3://bucket/a/b//", "single slashes"),
        ("s3://bucket/a/../b", "'..'"),
        ("s3://bucket/a?versionId=1", "%3F"),
        ("file:///var/backups/pg#1", "%23"),
        ("s3:///prefix", "names no bucket"),
        ("http://bucket/prefix", "s3:// or file://"),
    ],
)
def test_repository_urls_that_are_refused(url: str, complaint: str) -> None:
    message = refusal(None, {"JANUA_BACKUP_REPO": url})
    assert complaint in message and "repository.url" in message


def test_every_url_reader_follows_the_one_parse(tmp_path: Path) -> None:
    settings = config.load(None, {"JANUA_BACKUP_REPO": f"file://{tmp_path}/repo/"})
    assert open_storage(settings).describe() == f"file://{tmp_path}/repo"
    s3 = config.load(None, {"JANUA_BACKUP_REPO": "s3://bucket/team/"})
    assert open_storage(s3).describe() == "s3://bucket/team"


# --- files that cannot be read ----------------------------------------------------------------


def test_a_config_file_that_is_not_utf8_is_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[repository]\nurl = "file:///caf\xe9"\n'.encode("latin-1"))
    assert "is not UTF-8 text" in refusal(path)
    done = run_cli("--config", str(path), "info")
    assert done.exit_code == 3
    assert done.output.startswith("janua-backup: error: config file")
    assert "Traceback" not in done.output and done.output.count("\n") == 1


# --- files that hold secrets --------------------------------------------------------------------

S3_SECRET = '[repository]\nurl = "s3://b/p"\n\n[s3]\naccess_key_id = "AK"\n'


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (S3_SECRET + 'secret_access_key = "x"\n', "s3.secret_access_key"),
        (S3_SECRET + 'secret_access_key = "x"\nsession_token = "t"\n', "s3.session_token"),
        ('[encryption]\npassphrase = "correct horse"\n', "encryption.passphrase"),
        ('[postgres]\ndsn = "host=db password=hunter2"\n', "postgres.dsn"),
        ('[postgres]\ndsn = "postgresql://u:hunter2@db/x"\n', "postgres.dsn"),
        ('[postgres]\nprimary_dsn = "host=db1 password=hunter2"\n', "postgres.primary_dsn"),
    ],
)
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_config_file_with_secrets_readable_by_others_is_refused(
    tmp_path: Path, text: str, named: str, mode: int
) -> None:
    path = write(tmp_path / "janua.toml", text, mode)
    message = refusal(path)
    assert str(path) in message and named in message and f"chmod 600 {path}" in message
    path.chmod(0o600)
    config.load(str(path), {})


def test_a_config_file_without_secrets_may_be_readable(tmp_path: Path) -> None:
    text = '[repository]\nurl = "s3://b/p"\n\n[encryption]\npassphrase_env = "PW"\n'
    path = write(tmp_path / "janua.toml", text, 0o644)
    assert config.load(str(path), {"PW": "from the environment"}).encryption.passphrase


def test_a_readable_key_file_is_refused_wherever_it_is_named(tmp_path: Path) -> None:
    key = write(tmp_path / "repo.key", "00" * 32 + "\n", 0o644)
    path = write(tmp_path / "janua.toml", f'[encryption]\nkey_file = "{key}"\n', 0o644)
    assert f"chmod 600 {key}" in refusal(path)
    assert f"chmod 600 {key}" in refusal(None, {"JANUA_BACKUP_ENCRYPTION_KEY_FILE": str(key)})
    done = run_cli("--config", str(path), "info")
    assert done.exit_code == 3 and f"chmod 600 {key}" in done.output
    key.chmod(0o600)
    assert config.load(str(path), {}).encryption.key_file == str(key)


@pytest.mark.parametrize(
    ("opt_out", "environ"),
    [
        ("\n[security]\nallow_readable_secrets = true\n", {}),
        ("", {"JANUA_BACKUP_ALLOW_READABLE_SECRETS": "1"}),
    ],
)
def test_the_opt_out_is_explicit_and_warns(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    opt_out: str,
    environ: dict[str, str],
) -> None:
    monkeypatch.setattr(config, "_warned_readable", set())
    path = write(tmp_path / "janua.toml", S3_SECRET + 'secret_access_key = "x"\n' + opt_out, 0o644)
    with caplog.at_level(logging.WARNING, logger="janua_backup.config"):
        config.load(str(path), environ)
        config.load(str(path), environ)  # a command loads its settings more than once
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert str(path) in warnings[0] and "allow_readable_secrets" in warnings[0]


# --- no value in a message ----------------------------------------------------------------------


def every_setting() -> list[tuple[str, str, object]]:
    """(section, key, default) of every setting in the schema."""
    return [
        (section, f.name, getattr(cls(), f.name))
        for section, cls in config._SECTIONS.items()
        for f in dataclasses.fields(cls)
    ]


@pytest.mark.parametrize(("section", "key", "default"), every_setting())
def test_a_wrong_type_names_the_key_and_type_never_the_value(
    tmp_path: Path, section: str, key: str, default: object
) -> None:
    # A string setting gets a number, anything else a string: both are wrong.
    if isinstance(default, str) or default is None:
        line, shown = f"{key} = {NUMBER}", str(NUMBER)
    else:
        line, shown = f'{key} = "{SENTINEL}"', SENTINEL
    path = write(tmp_path / "janua.toml", f"[{section}]\n{line}\n")
    message = refusal(path)
    assert message.startswith(f"{section}.{key} must be "), message
    assert shown not in message


def test_the_secret_key_from_the_issue_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path / "janua.toml", "[s3]\nsecret_access_key = 1234567890123\n")
    assert refusal(path) == "s3.secret_access_key must be a string, not a number"


def test_a_wrong_number_from_the_environment_is_not_echoed() -> None:
    message = refusal(None, {"JANUA_BACKUP_JOBS": SENTINEL})
    assert message == "backup.jobs must be a whole number"


@pytest.mark.parametrize("typo", ["flase", "ture", "2"])
def test_a_flag_that_is_neither_true_nor_false_is_refused(tmp_path: Path, typo: str) -> None:
    # Read as false, a typo would have turned certificate checks off.
    path = write(tmp_path / "janua.toml", f'[s3]\nverify_tls = "{typo}"\n')
    assert refusal(path) == "s3.verify_tls must be true or false"


# --- bounds -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "line", "range_"),
    [
        ("s3", "retry_deadline_s = nan", "between 0 and 3600"),
        ("s3", "retry_deadline_s = inf", "between 0 and 3600"),
        ("s3", "retry_deadline_s = -1", "between 0 and 3600"),
        ("wal", "fetch_retry_deadline_s = 1e9", "between 0 and 3600"),
        ("wal", "prefetch_segments = 100000", "between 0 and 256"),
        ("wal", "prefetch_segments = -1", "between 0 and 256"),
        ("wal", "async_jobs = 99999", "between 0 and 1024"),
        ("wal", "async_max_segments = 0", "between 1 and 100000"),
        ("backup", "jobs = -1", "between 0 and 1024"),
        ("backup", "jobs = 123456789012345678901234567890", "between 0 and 1024"),
        ("backup", "bundle_limit_bytes = -5", "between 0 and 1073741824"),
        ("backup", "bundle_size_bytes = 0", "between 1048576 and 5368709120"),
        ("backup", "part_size_bytes = 1e15", "whole number"),
        ("backup", "part_size_bytes = 1000000000000000", "between 1048576 and 5368709120"),
        ("backup", "archive_timeout_s = nan", "between 1 and 86400"),
        ("backup", "archive_timeout_s = 0", "between 1 and 86400"),
        ("backup", "jobs = inf", "whole number"),
        ("backup", "jobs = 2.5", "whole number"),
        ("compression", "level = 99", "between 1 and 9 for gzip"),
        ("compression", "level = -3", "between 1 and 9 for gzip"),
    ],
)
def test_numbers_out_of_range_are_refused_naming_key_and_range(
    tmp_path: Path, section: str, line: str, range_: str
) -> None:
    path = write(tmp_path / "janua.toml", f"[{section}]\n{line}\n")
    message = refusal(path)
    assert message.startswith(f"{section}.{line.split()[0]} must be "), message
    assert range_ in message


def test_a_nan_from_the_environment_is_refused() -> None:
    environ = {"JANUA_BACKUP_COMPRESSION": "zstd", "JANUA_BACKUP_COMPRESSION_LEVEL": "25"}
    assert "between 1 and 19 for zstd" in refusal(None, environ)
    assert "jobs" in refusal(None, {"JANUA_BACKUP_JOBS": "9" * 5000})


def test_every_number_has_bounds() -> None:
    numeric = {
        (section, key)
        for section, key, default in every_setting()
        if isinstance(default, int | float) and not isinstance(default, bool)
    }
    assert numeric - set(config._BOUNDS) == {("compression", "level")}


def test_the_defaults_are_inside_the_bounds() -> None:
    config._validate(Settings())


def test_the_config_files_pgdata_wins_over_a_pgdata_in_the_shell(tmp_path: Path) -> None:
    # PGDATA used to override the file: check said ok, backup read another cluster.
    path = tmp_path / "janua.toml"
    path.write_text('[postgres]\npgdata = "/srv/pg/main"\ndsn = "host=/run/db"\n')
    shell = {"PGDATA": "/var/lib/postgresql/other", "JANUA_BACKUP_DSN": "host=/run/other"}
    settings = config.load(str(path), shell)
    assert settings.postgres.pgdata == "/srv/pg/main"
    # JANUA_BACKUP_* variables and flags still win over the file.
    assert settings.postgres.dsn == "host=/run/other"
    flagged = config.load(str(path), shell, {"postgres": {"pgdata": "/flag"}})
    assert flagged.postgres.pgdata == "/flag"


def test_pgdata_in_the_shell_fills_in_when_the_file_names_no_cluster(tmp_path: Path) -> None:
    path = tmp_path / "janua.toml"
    path.write_text('[repository]\nurl = "file:///r"\n')
    assert config.load(str(path), {"PGDATA": "/srv/pg"}).postgres.pgdata == "/srv/pg"
    assert config.load(None, {"PGDATA": "/srv/pg"}).postgres.pgdata == "/srv/pg"
