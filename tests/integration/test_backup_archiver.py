"""``backup`` on a cluster whose archive_command fails: it stops waiting for the stop
segment once pg_stat_archiver shows the failures, instead of its whole archive timeout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localstack import archiving_settings

from tests.integration import janua
from tests.integration.janua import RepoSpec


def test_backup_fails_fast_when_archiving_fails(pg_factory: Any, janua_exe: Path) -> None:
    repo_dir = pg_factory.empty_dir()  # owned by postgres, like a real repository
    home = pg_factory.empty_dir()
    # archive_timeout_s below the subprocess's 300 s: without the watch the backup would
    # fail only after it, with the old "did not reach" sentence the test refuses.
    spec = RepoSpec(url=f"file://{repo_dir}", extra="[backup]\narchive_timeout_s = 240\n")
    cluster = pg_factory(archiving_settings("false"))
    config = janua.write_config(home / "janua.toml", spec, pgdata=cluster.pgdata, dsn=cluster.dsn)

    done = janua.run(janua_exe, config, "backup")

    line = janua.one_line_error(done, 31, "archive_command keeps failing", "janua-backup check")
    assert "last_failed_wal 0000000" in line, line
    failed_count = int(cluster.sql("SELECT failed_count FROM pg_stat_archiver")[0][0])
    assert failed_count >= 2
