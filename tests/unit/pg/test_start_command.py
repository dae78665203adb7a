"""The printed start command: pg_ctlcluster on Debian's layout, else the right pg_ctl."""

from __future__ import annotations

from pathlib import Path

import pytest

from janua_backup.pg.start_command import debian_cluster, start_command


def _debian(root: Path, version: str, name: str, conf: str | None) -> Path:
    conf_dir = root / version / name
    conf_dir.mkdir(parents=True)
    if conf is not None:
        (conf_dir / "postgresql.conf").write_text(conf)
    return conf_dir


def test_a_debian_clusters_data_directory_is_started_with_pg_ctlcluster(tmp_path: Path) -> None:
    etc, data = tmp_path / "etc", tmp_path / "var" / "15" / "main"
    data.mkdir(parents=True)
    _debian(etc, "14", "old", "data_directory = '/nowhere/14/old'\n")
    _debian(
        etc,
        "15",
        "main",
        f"# data_directory = '/commented/out'\ndata_directory = '{data}'\t# elsewhere\n",
    )
    for as_root in (True, False):
        command = start_command(
            data, major=15, bindir="/opt/pg/bin", owner="postgres", as_root=as_root, conf_root=etc
        )
        assert command == "pg_ctlcluster 15 main start"


def test_the_older_pgdata_link_and_a_symlinked_data_directory_count(tmp_path: Path) -> None:
    etc, data = tmp_path / "etc", tmp_path / "data"
    data.mkdir()
    conf_dir = _debian(etc, "16", "reports", "port = 5433\n")
    (conf_dir / "pgdata").symlink_to(data)
    (tmp_path / "alias").symlink_to(data)
    found = debian_cluster(tmp_path / "alias", conf_root=etc)
    assert found is not None and (found.version, found.name) == ("16", "reports")


def test_outside_the_debian_layout_the_configured_bindir_names_pg_ctl(tmp_path: Path) -> None:
    etc, data = tmp_path / "etc", tmp_path / "restored copy"
    _debian(etc, "15", "main", "data_directory = '/var/lib/postgresql/15/main'\n")
    plain = start_command(
        data, major=15, bindir="/opt/pg15/bin", owner="pg", as_root=False, conf_root=etc
    )
    assert plain == f"/opt/pg15/bin/pg_ctl -D '{data}' start"
    as_root = start_command(
        data, major=15, bindir="/opt/pg15/bin", owner="pg", as_root=True, conf_root=etc
    )
    assert as_root == f"runuser -u pg -- /opt/pg15/bin/pg_ctl -D '{data}' start"


def test_without_a_configured_bindir_the_drills_finder_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pg_config on PATH names a bindir whose postgres is the backup's major: its pg_ctl."""
    tools, bindir = tmp_path / "tools", tmp_path / "pg 17" / "bin"
    tools.mkdir()
    bindir.mkdir(parents=True)
    _script(tools / "pg_config", f"echo '{bindir}'")
    _script(bindir / "postgres", "echo 'postgres (PostgreSQL) 17.4'")
    monkeypatch.setenv("PATH", str(tools))
    data = tmp_path / "d"
    command = start_command(
        data, major=17, bindir=None, owner="postgres", as_root=True, conf_root=tmp_path
    )
    assert command == f"runuser -u postgres -- '{bindir}/pg_ctl' -D {data} start"
    missing = start_command(
        data, major=16, bindir=None, owner="me", as_root=False, conf_root=tmp_path
    )
    assert missing == f"pg_ctl -D {data} start"  # no PostgreSQL 16 here: the PATH's pg_ctl


def _script(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_no_etc_postgresql_at_all_is_not_debian(tmp_path: Path) -> None:
    assert debian_cluster(tmp_path / "d", conf_root=tmp_path / "absent") is None
