"""The drill's scratch server: what can be known without starting one."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from janua_backup.commands import verify
from janua_backup.errors import ConfigError
from janua_backup.pg.scratch import Cancelled, Owner, ScratchServer, find_bindir


def server(tmp_path: Path) -> ScratchServer:
    return ScratchServer(
        tmp_path / "data", tmp_path, tmp_path / "bin", user="postgres", owner=Owner.of(tmp_path)
    )


def test_a_cancelled_wait_ends_at_once(tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        server(tmp_path).wait_promoted(600, cancel)


def test_a_wait_on_a_server_that_never_started_says_it_stopped(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="scratch server stopped"):
        server(tmp_path).wait_promoted(600)


def test_restore_progress_stops_a_cancelled_drill() -> None:
    cancel = threading.Event()
    tick = verify._stopper(cancel)
    assert tick is not None and verify._stopper(None) is None
    tick(10)
    cancel.set()
    with pytest.raises(Cancelled):
        tick(10)


def test_settings_keep_the_server_away_from_production(tmp_path: Path) -> None:
    settings = server(tmp_path)._settings()
    assert settings["archive_mode"] == "off"
    assert settings["synchronous_standby_names"] == ""
    assert settings["hba_file"].startswith(str(tmp_path))
    assert settings["config_file"].startswith(str(tmp_path))  # no postgresql.conf in data


def test_missing_binaries_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--pg-bindir"):
        find_bindir(15, str(tmp_path))


def test_a_missing_scratch_parent_is_one_sentence(tmp_path: Path) -> None:
    from janua_backup.errors import InputError

    with pytest.raises(InputError, match="--scratch-dir"):
        verify._scratch_home(tmp_path / "missing")


@pytest.mark.parametrize(
    ("says", "major"),
    [
        ("postgres (PostgreSQL) 18beta3", 18),
        ("postgres (PostgreSQL) 18rc1", 18),
        ("postgres (PostgreSQL) 17.4 (Homebrew)", 17),
        ("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", 15),
    ],
)
def test_binaries_of_pre_releases_and_packagers_are_found(
    tmp_path: Path, says: str, major: int
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    postgres = bindir / "postgres"
    postgres.write_text(f"#!/bin/sh\necho '{says}'\n")
    postgres.chmod(0o755)
    assert find_bindir(major, str(bindir)) == bindir
    with pytest.raises(ConfigError, match=f"no PostgreSQL {major + 1} server programs"):
        find_bindir(major + 1, str(bindir))


def test_a_tool_that_cannot_be_run_is_a_postgres_error(tmp_path: Path) -> None:
    from janua_backup.errors import PostgresError

    with pytest.raises(PostgresError, match=r"could not run .*pg_checksums"):
        server(tmp_path).run_tool("pg_checksums", "--check", timeout_s=5)
