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


def test_the_window_ends_at_the_last_archived_commit(
    s3_server: Any, s3_bucket: str, pg_factory: Any, janua_exe: Path
) -> None:
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
    last_commit = committed[-1][1]
    time.sleep(1.5)  # the segment is archived well after its last commit
    segment = janua.switch_and_wait_archived(cluster)

    (backup,) = janua.run_json(janua_exe, config, "list")["backups"]
    window = backup["window"]
    assert window["last_wal"] == segment
    assert datetime.fromisoformat(window["latest_time"]) == last_commit

    # After the last commit, before the segment was archived: unreachable.
    refused_dir = pg_factory.empty_dir()
    before = janua.tree_snapshot(refused_dir)
    target = last_commit + timedelta(milliseconds=500)
    done = janua.run(
        janua_exe, config, "restore", "--pgdata", str(refused_dir), "--target-time", iso(target)
    )
    janua.one_line_error(done, 5, iso(last_commit), "--target latest")
    assert janua.tree_snapshot(refused_dir) == before
    # The last commit itself: recovery stops only at a commit stamped after the target.
    done = janua.run(
        janua_exe, config, "restore", "--pgdata", str(refused_dir), "--target-time",
        iso(last_commit),
    )  # fmt: skip
    janua.one_line_error(done, 5, iso(last_commit))
    assert janua.tree_snapshot(refused_dir) == before

    # Just before the window's end as `list` shows it: every row but the last.
    just_before = datetime.fromisoformat(window["latest_time"]) - timedelta(microseconds=1)
    pitr_dir = pg_factory.empty_dir() / "pitr"
    janua.ok(
        janua.run(
            janua_exe, config, "restore", "--pgdata", str(pitr_dir), "--target-time",
            iso(just_before),
        )
    )  # fmt: skip
    restored = janua.start_restored(pg_factory, pitr_dir)
    assert janua.ids(restored) == list(range(1, 8))
    restored.stop()

    # The advice works: --target latest replays everything archived.
    end_dir = pg_factory.empty_dir() / "end"
    janua.ok(janua.run(janua_exe, config, "restore", "--pgdata", str(end_dir), "--target", "latest"))
    restored_end = janua.start_restored(pg_factory, end_dir)
    assert janua.ids(restored_end) == list(range(1, 9))
