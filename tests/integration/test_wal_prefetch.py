"""WAL prefetch through the real stack: restore_command, SeaweedFS, detached prefetchers.

What proves prefetch happened is what ``wal-fetch`` tells PostgreSQL's log
for each segment: ``source=prefetch`` (handed over from the spool) or
``source=archive`` (fetched by the call itself). The rows a restore brings
back prove nothing was lost or taken from the wrong timeline on the way.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from localstack import ExternalS3, PgCluster, make_postgres_dir

from janua_backup.pg.wal import WalSegment
from tests.conftest import KEEP_DIRS
from tests.integration import janua
from tests.integration.conftest import PgFactory
from tests.integration.test_pitr import s3_spec

PREFETCH = "prefetch_segments = 8"
SEGMENT_NAME = re.compile(r"[0-9A-F]{24}")


def spool_of(pgdata: Path) -> Path:
    return pgdata / "pg_wal" / ".janua-spool" / "prefetch"


def prefetched(cluster: PgCluster) -> list[str]:
    """Segments the server got from the prefetch spool, from restore_command's log lines."""
    text = cluster.log_path.read_text(errors="replace")
    return re.findall(r"wal-fetch name=([0-9A-F]{24})(?: size=\d+)? source=prefetch", text)


def wait_prefetcher_gone(pgdata: Path, limit_s: float = 60.0) -> None:
    """Until nobody holds the spool lock: the prefetcher has cleaned up and exited."""
    deadline = time.monotonic() + limit_s
    fd = os.open(spool_of(pgdata) / "lock", os.O_RDWR)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the prefetcher of {pgdata} still runs") from None
                time.sleep(0.1)
    finally:
        os.close(fd)


def assert_spool_clean(pgdata: Path) -> None:
    wait_prefetcher_gone(pgdata)
    left = [n for n in os.listdir(spool_of(pgdata)) if SEGMENT_NAME.fullmatch(n) or "tmp" in n]
    assert left == [], f"segments left in the prefetch spool: {left}"
    log = (spool_of(pgdata) / "prefetch.log").read_text()
    assert "wal-prefetch end reason=recovery over" in log, log


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def rows_with_switches(cluster: PgCluster, ids: range) -> tuple[list[datetime], list[str]]:
    """One row per segment (insert, switch), then wait until the last one is archived.

    Returns the commit times and the names of the segments switched away from.
    """
    times, names = [], []
    for row in ids:
        times.append(janua.insert_rows(cluster, row, 1, pause_s=0)[0][1])
        (name,) = cluster.sql("SELECT pg_walfile_name(pg_switch_wal())")[0]
        names.append(str(name))
    janua.wait_archived(cluster, names[-1], timeout_s=120)
    return times, names


@dataclass(frozen=True)
class Archive:
    """A repository holding a backup and then one row per segment on timeline 1."""

    config: Path
    commits: list[datetime]  # of rows 1, 2, ...
    segments: list[str]  # the segment of each row


@pytest.fixture(scope="module")
def archive(workdir: Path, pg_bindir: Path, s3_server: Any, janua_exe: Path) -> Iterator[Archive]:
    """Built once for this file (the slow part: 22 segments through archive_command);
    the cluster is stopped afterwards, as if lost."""
    base = make_postgres_dir(Path(tempfile.mkdtemp(prefix="pg-", dir=workdir)), 0o755)
    factory = PgFactory(base, pg_bindir)
    bucket = f"janua-test-{secrets.token_hex(6)}"
    s3_server.create_bucket(bucket)
    try:
        config = factory.empty_dir() / "janua.toml"
        spec = s3_spec(s3_server, bucket, extra=PREFETCH)
        janua.write_config(config, spec, fetch_deadline_s=2, s3_deadline_s=1)
        source = janua.archiving_cluster(factory, janua_exe, config)
        janua.write_config(
            config, spec, pgdata=source.pgdata, dsn=source.dsn, fetch_deadline_s=2, s3_deadline_s=1
        )
        source.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
        janua.ok(janua.run(janua_exe, config, "backup"))
        commits, segments = rows_with_switches(source, range(1, 23))
        source.stop()
        yield Archive(config, commits, segments)
    finally:
        factory.stop_all()
        if isinstance(s3_server, ExternalS3):
            s3_server.delete_bucket(bucket)
        if not KEEP_DIRS:
            shutil.rmtree(base, ignore_errors=True)


def test_prefetch_across_a_timeline_switch(
    archive: Archive, pg_factory: Any, janua_exe: Path
) -> None:
    """A restore to row 18 promotes to timeline 2, which archives 4 more segments into
    the same repository (an in-place incident restore: timeline 1's rows 19-22 were all
    archived before timeline 2 began, so timeline 2 is the newest activity), and a
    restore to the end follows the history file onto timeline 2 without being told
    (``repository.timelines``): rows 1-18 and 101-104, not 19-22."""
    config, commits = archive.config, archive.commits
    target = commits[17] + (commits[18] - commits[17]) / 2

    # 18 segments replayed with prefetch, stopping mid-archive: what was spooled
    # beyond the target must be gone once recovery is over.
    mid_dir = pg_factory.empty_dir() / "mid"
    janua.ok(
        janua.run(
            janua_exe, config, "restore", "--pgdata", str(mid_dir),
            "--target-time", iso(target), "--archive-mode", "on",  # it archives timeline 2
        )
    )  # fmt: skip
    mid = janua.start_restored(pg_factory, mid_dir, archive=True)
    assert janua.ids(mid) == list(range(1, 19))
    assert len(prefetched(mid)) >= 9, mid.log_path.read_text()[-3000:]
    assert_spool_clean(mid_dir)
    (current,) = mid.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0]
    assert current.startswith("00000002")
    rows_with_switches(mid, range(101, 105))  # archived by the promoted cluster, timeline 2
    mid.stop()

    end_dir = pg_factory.empty_dir() / "end"
    done = janua.ok(janua.run(janua_exe, config, "restore", "--pgdata", str(end_dir)))
    assert "1 -> 2 (switch at" in done.stderr, done.stderr
    end = janua.start_restored(pg_factory, end_dir)
    assert janua.ids(end) == [*range(1, 19), *range(101, 105)]
    names = prefetched(end)
    assert any(n.startswith("00000001") for n in names), names
    assert any(n.startswith("00000002") for n in names), names
    assert_spool_clean(end_dir)
    end.stop()


def test_wal_fetch_exits_128_when_s3_is_down_even_with_a_prefetcher_running(
    archive: Archive, pg_factory: Any, janua_exe: Path, local_s3_server: Any
) -> None:
    config, names = archive.config, archive.segments[:4]
    restored = pg_factory.empty_dir() / "restored"
    janua.ok(janua.run(janua_exe, config, "restore", "--pgdata", str(restored)))
    spool = spool_of(restored)

    # As PostgreSQL would call it: from the data directory in recovery.
    def fetch(name: str) -> Any:
        return janua.run(janua_exe, config, "wal-fetch", name, "pg_wal/RECOVERYXLOG", cwd=restored)

    first = janua.ok(fetch(names[0]))
    assert f"name={names[0]}" in first.stderr and "source=archive" in first.stderr
    deadline = time.monotonic() + 60
    while not all((spool / n).exists() for n in names[1:]):
        assert time.monotonic() < deadline, sorted(os.listdir(spool))
        time.sleep(0.1)

    local_s3_server.stop()
    try:
        hit = janua.ok(fetch(names[1]))  # the spool needs no storage
        assert "source=prefetch" in hit.stderr, hit.stderr
        last = WalSegment.parse(archive.segments[-1])
        beyond = WalSegment.from_number(last.timeline, last.number + 20, last.segment_size).name
        down = fetch(beyond)
        janua.one_line_error(down, 128, beyond)
        lock = os.open(spool / "lock", os.O_RDWR)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                raise AssertionError("no prefetcher holds the spool lock")
            except BlockingIOError:
                pass  # it is still running, and its failures did not change the answer
        finally:
            os.close(lock)
    finally:
        local_s3_server.start()
    (restored / "recovery.signal").unlink()  # recovery "over": the prefetcher cleans up, exits
    assert_spool_clean(restored)
