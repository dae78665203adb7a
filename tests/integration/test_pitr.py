"""End to end: archive, back up, change, restore to a point in time, compare rows.

The rows a restore brings back are the only proof that counts: each row is
inserted in its own transaction with track_commit_timestamp on, and a restore
to a time strictly between two commits must bring back exactly the rows
committed at or before it.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from localstack import chown_to_postgres, write_private

from tests.integration import janua
from tests.integration.janua import RepoSpec


def s3_spec(server: Any, bucket: str, **kw: Any) -> RepoSpec:
    s3 = {
        "endpoint": server.endpoint_url,
        "region": server.region,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
    }
    return RepoSpec(url=f"s3://{bucket}/cluster-a", s3=s3, **kw)


def make_key(directory: Path) -> Path:
    key = directory / "repo.key"
    write_private(key, secrets.token_hex(32) + "\n")
    chown_to_postgres(key)
    return key


@pytest.fixture(
    params=["s3-gzip", "s3-zstd-encrypted", "s3-zstd-passphrase", "file-gzip-passphrase"]
)
def spec(
    request: pytest.FixtureRequest, s3_server: Any, s3_bucket: str, pg_factory: Any
) -> RepoSpec:
    if request.param == "s3-gzip":
        return s3_spec(s3_server, s3_bucket)
    if request.param == "s3-zstd-encrypted":
        return s3_spec(
            s3_server, s3_bucket, codec="zstd", key_file=make_key(pg_factory.empty_dir())
        )
    if request.param == "s3-zstd-passphrase":  # the repository's own salt, in its marker
        return s3_spec(s3_server, s3_bucket, codec="zstd", passphrase="correct horse battery")
    repo_dir = pg_factory.empty_dir()  # owned by postgres: archive_command writes here
    return RepoSpec(url=f"file://{repo_dir}", passphrase="correct horse battery staple")


@pytest.mark.pg_matrix(only={"spec": "s3-zstd-encrypted"})
def test_restore_to_time_between_commits_and_to_end_of_archive(
    spec: RepoSpec, pg_factory: Any, janua_exe: Path
) -> None:
    home = pg_factory.empty_dir()
    config = home / "janua.toml"
    janua.write_config(config, spec)
    cluster = janua.archiving_cluster(pg_factory, janua_exe, config)
    janua.write_config(config, spec, pgdata=cluster.pgdata, dsn=cluster.dsn)
    cluster.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    janua.insert_rows(cluster, 1, 5)

    backup = janua.run_json(janua_exe, config, "backup")
    assert backup["size_bytes"] > 1_000_000

    committed = janua.insert_rows(cluster, 6, 10)
    janua.switch_and_wait_archived(cluster)
    # A point strictly between the commits of rows 10 and 11.
    before, after = committed[4][1], committed[5][1]
    assert before < after
    target = before + (after - before) / 2
    listing = janua.run_json(janua_exe, config, "list")
    assert [b["backup_id"] for b in listing["backups"]] == [backup["backup_id"]]
    assert listing["backups"][0]["window"]["restorable"]

    pitr_dir = pg_factory.empty_dir() / "pitr"
    # As `date -u` and psql print it: a zone name after the time (refused before issue 13).
    target_text = target.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    done = janua.ok(
        janua.run(
            janua_exe, config, "restore", "--pgdata", str(pitr_dir), "--target-time", target_text
        )
    )
    assert "restore plan" in done.stderr and backup["backup_id"] in done.stderr
    # The start command names a pg_ctl that exists here (the drill's bindir for this major).
    start = done.stdout.splitlines()[-1].split()
    assert start[-3:] == ["-D", str(pitr_dir), "start"]
    pg_ctl = Path(start[start.index("-D") - 1])
    assert pg_ctl.name == "pg_ctl" and (not pg_ctl.is_absolute() or os.access(pg_ctl, os.X_OK))
    restored = janua.start_restored(pg_factory, pitr_dir)
    assert janua.ids(restored) == list(range(1, 11))
    restored.stop()

    end_dir = pg_factory.empty_dir() / "end"
    janua.ok(janua.run(janua_exe, config, "restore", "--pgdata", str(end_dir)))
    restored_end = janua.start_restored(pg_factory, end_dir)
    assert janua.ids(restored_end) == list(range(1, 16))
    notes = restored_end.sql("SELECT note FROM items WHERE id = 15")
    assert notes == [("row 15",)]
    restored_end.stop()

    # --quiet: nothing but warnings on success, on stdout or stderr (cron mails any output).
    for args in (
        ["backup"],
        ["check"],
        [
            "restore",
            "--pgdata",
            str(pg_factory.empty_dir() / "quiet"),
            "--target-time",
            target_text,
        ],
        ["expire", "--dry-run"],
    ):
        done = janua.ok(janua.run(janua_exe, config, "--quiet", *args))
        assert done.stdout == "", args
        said = [line for line in done.stderr.splitlines() if " WARNING janua_backup." not in line]
        assert said == [], args  # warnings still reach cron; no plan, no progress, no result
