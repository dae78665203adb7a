"""Issue 15, finding 2, on real PostgreSQL 15 and SeaweedFS: the objects of two archived
segments swapped in the bucket. ``wal-fetch`` refuses both (exit 128, nothing at ``%p``),
``verify --repo`` names them (exit 40), and a restore to the end of the archive never
promotes with rows silently missing: recovery stops loudly, or every row comes back.
A damaged object fails ``wal-fetch`` after two re-reads, not after its retry deadline."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
from localstack import StackError

from tests.integration import janua
from tests.integration.test_faults import PREFIX, flip_byte
from tests.integration.test_pitr import s3_spec

REREAD = "reading it again"


def archiving_stack(
    s3_server: Any, s3_bucket: str, pg_factory: Any, janua_exe: Path
) -> tuple[Any, Path, list[str]]:
    """A cluster with a backup of rows 1-5, then rows 6-10 and 11-15 in two segments of
    their own, each archived; returns the cluster, the config and those two segments."""
    spec = s3_spec(s3_server, s3_bucket)
    config = pg_factory.empty_dir() / "janua.toml"
    # A long transport deadline: a fast failure below can only come from the re-read rule.
    janua.write_config(config, spec, fetch_deadline_s=120)
    cluster = janua.archiving_cluster(pg_factory, janua_exe, config)
    janua.write_config(config, spec, pgdata=cluster.pgdata, dsn=cluster.dsn, fetch_deadline_s=120)
    cluster.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    janua.insert_rows(cluster, 1, 5, pause_s=0)
    janua.run_json(janua_exe, config, "backup")
    segments = []
    for first in (6, 11):
        janua.insert_rows(cluster, first, 5, pause_s=0)
        segments.append(janua.switch_and_wait_archived(cluster))
    return cluster, config, segments


def swap(client: Any, bucket: str, a: str, b: str) -> None:
    body_a = client.get_object(Bucket=bucket, Key=f"{PREFIX}wal/{a}")["Body"].read()
    body_b = client.get_object(Bucket=bucket, Key=f"{PREFIX}wal/{b}")["Body"].read()
    client.put_object(Bucket=bucket, Key=f"{PREFIX}wal/{a}", Body=body_b)
    client.put_object(Bucket=bucket, Key=f"{PREFIX}wal/{b}", Body=body_a)


def recovery_outcome(cluster: Any, timeout_s: float = 180) -> str:
    """Start ``cluster``: 'promoted' once recovery has ended, 'stopped' once it is gone."""
    try:
        cluster.start()  # returns once connections are accepted, fails if the server exits
    except StackError:
        return "stopped"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if not cluster.sql("SELECT pg_is_in_recovery()")[0][0]:
                return "promoted"
        except psycopg.OperationalError:
            if not cluster.is_running:
                return "stopped"
        time.sleep(0.3)
    raise AssertionError(f"{cluster.pgdata} neither promoted nor stopped in {timeout_s}s")


def test_swapped_wal_objects_are_refused_reported_and_never_promoted_short(
    s3_server: Any, s3_bucket: str, s3_client: Any, pg_factory: Any, janua_exe: Path
) -> None:
    cluster, config, (first, second) = archiving_stack(s3_server, s3_bucket, pg_factory, janua_exe)
    swap(s3_client, s3_bucket, first, second)

    # (a) wal-fetch of either: exit 128 naming it and what it holds instead; nothing at %p.
    for name, holds in ((first, second), (second, first)):
        where = pg_factory.empty_dir()
        done = janua.run(janua_exe, config, "wal-fetch", name, str(where / "RECOVERYXLOG"))
        janua.one_line_error(done, 128, name, f"holds segment {holds}")
        assert janua.tree_snapshot(where) == []
        assert done.stderr.count(REREAD) == 2, done.stderr  # read three times, then gave up

    # (b) verify --repo: exit 40, both segments reported as damaged.
    done = janua.run(janua_exe, config, "verify", "--repository-only")
    assert done.returncode == 40, done.stdout + done.stderr
    report = done.stdout + done.stderr
    assert f"WAL {first} is damaged" in report and f"holds segment {second}" in report
    assert f"WAL {second} is damaged" in report

    # (c) restore to the end of the archive: recovery must not end early at the swapped
    # segment and promote without rows 6-15.
    cluster.stop()
    target = pg_factory.empty_dir() / "end"
    restore = janua.run(janua_exe, config, "restore", "--pgdata", str(target))
    if restore.returncode != 0:  # refusing to restore is loud enough
        janua.one_line_error(restore, restore.returncode, first)
        return
    restored = pg_factory.adopt(target, settings={"archive_mode": "off"})
    outcome = recovery_outcome(restored)
    if outcome == "promoted":
        assert janua.ids(restored) == list(range(1, 16)), "promoted with rows missing"
    else:
        log = restored.log_path.read_text(errors="replace")
        assert f"wal-fetch {first}: " in log and f"holds segment {second}" in log, log[-3000:]


def test_a_damaged_wal_object_fails_wal_fetch_after_two_rereads(
    s3_server: Any, s3_bucket: str, s3_client: Any, pg_factory: Any, janua_exe: Path
) -> None:
    """Not after fetch_retry_deadline_s (120 s here): damage does not heal with time."""
    _, config, (first, _) = archiving_stack(s3_server, s3_bucket, pg_factory, janua_exe)
    flip_byte(s3_client, s3_bucket, f"{PREFIX}wal/{first}", 5000)
    where = pg_factory.empty_dir()
    done = janua.run(janua_exe, config, "wal-fetch", first, str(where / "RECOVERYXLOG"))
    janua.one_line_error(done, 128, first)
    assert done.stderr.count(REREAD) == 2, done.stderr
    assert janua.tree_snapshot(where) == []
