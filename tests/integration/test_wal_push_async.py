"""Asynchronous WAL archiving ([wal] archive_async = true) against a real cluster and S3.

The worker pushes the segments PostgreSQL marked ready, several at once; the
archiver's ``wal-push`` only reads the verdict on its own segment. What must
hold whatever happens to the worker: every segment reaches the bucket, none
is marked ``.ok`` in the spool before it is stored, and a restore brings back
every committed row.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localstack import PgCluster

from janua_backup import spool
from janua_backup.pg.wal import WalSegment
from janua_backup.repository import layout
from tests.integration import janua
from tests.integration.test_pitr import s3_spec

PREFIX = "cluster-a/"


class AsyncStack:
    """An archiving cluster with archive_async on, a table, and one backup."""

    def __init__(self, factory: Any, exe: Path, server: Any, bucket: str, extra: str = "") -> None:
        self.factory, self.exe = factory, exe
        self.spec = s3_spec(server, bucket, extra=f"archive_async = true\n{extra}")
        self.config = factory.empty_dir() / "janua.toml"
        janua.write_config(self.config, self.spec, s3_deadline_s=20)
        self.cluster: PgCluster = janua.archiving_cluster(factory, exe, self.config)
        janua.write_config(
            self.config, self.spec, pgdata=self.cluster.pgdata, dsn=self.cluster.dsn,
            s3_deadline_s=20,
        )  # fmt: skip
        self.spool = self.cluster.pgdata / "pg_wal" / ".janua-spool" / "archive"
        self.cluster.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
        janua.insert_rows(self.cluster, 1, 3, pause_s=0)
        self.backup = janua.run_json(exe, self.config, "backup")
        self.rows = 3

    def burst(self, segments: int, rows_each: int = 500) -> list[str]:
        """Inserts rows and switches WAL ``segments`` times; the switched segments' names."""
        names = []
        for _ in range(segments):
            first = self.rows + 1
            self.rows += rows_each
            self.cluster.sql(
                "INSERT INTO items SELECT g, repeat('x', 200)"
                " FROM generate_series(%s::int, %s::int) g",
                (first, self.rows),
            )
            names.append(self.cluster.sql("SELECT pg_walfile_name(pg_switch_wal())")[0][0])
        return names

    def pause_archiving(self, paused: bool) -> None:
        command = "/bin/false" if paused else janua.archive_command(self.exe, self.config)
        self.cluster.configure({"archive_command": command})
        self.cluster.sql("SELECT pg_reload_conf()")

    def ok_names(self) -> set[str]:
        return {p.name[: -len(".ok")] for p in self.spool.glob("*.ok")}

    def restore_and_check(self) -> None:
        target = self.factory.empty_dir() / "restored"
        janua.ok(janua.run(self.exe, self.config, "restore", "--pgdata", str(target)))
        restored = janua.start_restored(self.factory, target)
        assert janua.ids(restored) == list(range(1, self.rows + 1))
        restored.stop()


def archived(client: Any, bucket: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=PREFIX + layout.WAL_PREFIX
    )
    return {
        layout.wal_name(obj["Key"][len(PREFIX) :]) for page in pages for obj in page["Contents"]
    }


def every_segment(first: str, last: str) -> list[str]:
    segment, names = WalSegment.parse(first), []
    while segment.name <= last:
        names.append(segment.name)
        segment = segment.next()
    return names


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"no {what} after {timeout_s}s"
        time.sleep(0.01)
    return found


def live_worker(directory: Path) -> int | None:
    """The pid in worker.pid if that process is a running wal-push-worker."""
    pid = spool.read_pid(directory)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
    except FileNotFoundError:
        return None
    return pid if b"wal-push-worker" in cmdline else None


def test_a_burst_is_archived_in_full_and_restores(
    s3_server: Any, s3_bucket: str, s3_client: Any, pg_factory: Any, janua_exe: Path
) -> None:
    stack = AsyncStack(pg_factory, janua_exe, s3_server, s3_bucket)
    # The archive_command janua-backup prints: segments the worker stored are
    # acknowledged by its shell test, without starting Python.
    command = janua.printed_archive_command(janua_exe, stack.config)
    assert 'd=pg_wal/.janua-spool; [ -O "$d" ] && [ -O "$d/wal-push.1.sh" ]' in command
    stack.cluster.configure({"archive_command": command})
    stack.cluster.sql("SELECT pg_reload_conf()")
    (first,) = stack.cluster.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0]
    names = stack.burst(20)
    janua.wait_archived(stack.cluster, names[-1], timeout_s=120)
    assert "mode=async (shell)" in stack.cluster.log_path.read_text()

    assert set(every_segment(first, names[-1])) <= archived(s3_client, s3_bucket)
    (failed,) = stack.cluster.sql("SELECT failed_count FROM pg_stat_archiver")[0]
    assert failed == 0
    assert list(stack.spool.glob("*.error")) == []
    assert "mode=async" in stack.cluster.log_path.read_text()  # the worker did the pushing
    log = stack.spool / spool.LOG_FILE
    wait_for("worker end line", lambda: "wal-push-worker stored=" in log.read_text())
    stack.restore_and_check()


def test_a_killed_worker_loses_nothing_and_marks_nothing_unstored(
    local_s3_server: Any, s3_bucket: str, s3_client: Any, pg_factory: Any, janua_exe: Path
) -> None:
    stack = AsyncStack(pg_factory, janua_exe, local_s3_server, s3_bucket)
    (first,) = stack.cluster.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0]

    # 1. Killed mid-push with S3 up: a backlog builds while archiving is paused, the
    # worker takes it on; it is frozen once its first segment is marked stored.
    stack.pause_archiving(True)
    backlog = stack.burst(8)
    stack.pause_archiving(False)
    wait_for("an .ok in the backlog", lambda: stack.ok_names() & set(backlog))
    pid = wait_for("worker pid", lambda: live_worker(stack.spool))
    os.kill(pid, signal.SIGSTOP)
    try:
        marked, stored = stack.ok_names(), archived(s3_client, s3_bucket)
        assert marked and marked <= stored  # nothing marked that is not stored
        assert set(backlog) - marked  # frozen mid-run: segments were left to do
    finally:
        os.kill(pid, signal.SIGKILL)
    janua.wait_archived(stack.cluster, backlog[-1], timeout_s=120)

    # 2. Killed while S3 is down and the worker retries: nothing marked, nothing lost.
    log = stack.spool / spool.LOG_FILE
    seen = log.stat().st_size
    local_s3_server.stop()
    try:
        outage = stack.burst(2)

        def retrying() -> int | None:
            return live_worker(stack.spool) if b"s3 retry" in log.read_bytes()[seen:] else None

        pid = wait_for("a worker retrying S3", retrying)
        os.kill(pid, signal.SIGKILL)
        assert not stack.ok_names() & set(outage)
    finally:
        local_s3_server.start()
    janua.wait_archived(stack.cluster, outage[-1], timeout_s=120)

    stored = archived(s3_client, s3_bucket)
    assert set(every_segment(first, outage[-1])) <= stored  # no gap
    assert stack.ok_names() <= stored
    stack.restore_and_check()
