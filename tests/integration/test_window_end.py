"""The recoverable window ends at the last commit in the archived WAL, not at its archive time.

A segment is archived some time after its last commit. A target between the
two used to be accepted, and PostgreSQL then stopped with "recovery ended
before configured recovery target was reached". Now `list` shows the last
archived commit as the window's end, a target at or after it is refused
before anything is written (exit 5), and a target just before it restores
exactly: every row but the last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.integration import janua
from tests.integration.janua import RepoSpec


def s3_spec(server: Any, bucket: str) -> RepoSpec:
    s3 = {
        "endpoint": server.endpoint_url,
        "region": server.region,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
    }
    return RepoSpec(url=f"s3://{bucket}/cluster-a", s3=s3)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Archived:
    config: Path
    last_commit: datetime  # of row 8, the last one
    segment: str  # the segment holding it, archived 1.5 s later


def archived_rows(s3_server: Any, s3_bucket: str, pg_factory: Any, janua_exe: Path) -> Archived:
    """A backup with rows 1-3, then rows 4-8 committed one by one and archived later."""
    home = pg_factory.empty_dir()
    config = home / "janua.toml"
    spec = s3_spec(s3_server, s3_bucket)
    janua.write_config(config, spec)
    quiet = {"autovacuum": "off"}  # no commit but ours after the last row
    cluster = janua.archiving_cluster(pg_factory, janua_exe, config, quiet)
    janua.write_config(config, spec, pgdata=cluster.pgdata, dsn=cluster.dsn)
    cluster.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    janua.insert_rows(cluster, 1, 3)
    janua.run_json(janua_exe, config, "backup")
    committed = janua.insert_rows(cluster, 4, 5)
    time.sleep(1.5)  # the segment is archived well after its last commit
    segment = janua.switch_and_wait_archived(cluster)
    return Archived(config, committed[-1][1], segment)


def test_a_target_after_the_last_archived_commit_is_refused_before_anything_is_written(
    s3_server: Any, s3_bucket: str, pg_factory: Any, janua_exe: Path
) -> None:
    archived = archived_rows(s3_server, s3_bucket, pg_factory, janua_exe)
    last_commit = archived.last_commit
    refused_dir = pg_factory.empty_dir()
    before = janua.tree_snapshot(refused_dir)
    # After the last commit, before the segment was archived: unreachable.
    for target in (last_commit + timedelta(milliseconds=500), last_commit):
        done = janua.run(
            janua_exe, archived.config, "restore", "--pgdata", str(refused_dir),
            "--target-time", iso(target),
        )  # fmt: skip
        janua.one_line_error(done, 5, iso(last_commit), "--target latest")
        assert janua.tree_snapshot(refused_dir) == before


def test_a_target_just_before_the_last_archived_commit_restores_exactly(
    s3_server: Any, s3_bucket: str, pg_factory: Any, janua_exe: Path
) -> None:
    archived = archived_rows(s3_server, s3_bucket, pg_factory, janua_exe)
    config = archived.config
    (backup,) = janua.run_json(janua_exe, config, "list")["backups"]
    window = backup["window"]
    assert window["last_wal"] == archived.segment
    end = datetime.fromisoformat(window["latest_time"])
    assert end == archived.last_commit

    # Just before the window's end as `list` shows it: every row but the last.
    pitr_dir = pg_factory.empty_dir() / "pitr"
    just_before = iso(end - timedelta(microseconds=1))
    janua.ok(
        janua.run(
            janua_exe, config, "restore", "--pgdata", str(pitr_dir), "--target-time", just_before
        )
    )
    restored = janua.start_restored(pg_factory, pitr_dir)
    assert janua.ids(restored) == list(range(1, 8))
    restored.stop()

    # The advice of the refusal works: --target latest replays everything archived.
    end_dir = pg_factory.empty_dir() / "end"
    janua.ok(
        janua.run(janua_exe, config, "restore", "--pgdata", str(end_dir), "--target", "latest")
    )
    restored_end = janua.start_restored(pg_factory, end_dir)
    assert janua.ids(restored_end) == list(range(1, 9))
