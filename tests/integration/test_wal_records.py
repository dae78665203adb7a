"""The WAL record reader on segments a real PostgreSQL 15 wrote, pg_waldump as the oracle.

Every commit/abort record the reader finds must be one pg_waldump prints, at
the same LSN and with the same timestamp to the microsecond; a record that
crosses a segment boundary is read only when both segments are given; a
segment written inside one long transaction holds none.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from janua_backup.pg import walrecords
from janua_backup.pg.wal import Lsn, WalSegment

SEGMENT = 16 * 1024 * 1024
_DUMP_LINE = re.compile(
    r"lsn: ([0-9A-F]+/[0-9A-F]+), prev \S+, desc: (COMMIT|ABORT) "
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}) UTC"
)
QUIET = {"autovacuum": "off", "track_commit_timestamp": "on", "wal_keep_size": "1GB"}


def chunks(*paths: Path, size: int = 1 << 20) -> Iterator[bytes]:
    for path in paths:
        with path.open("rb") as handle:
            while chunk := handle.read(size):
                yield chunk


def waldump(bindir: Path, *paths: Path) -> list[tuple[Lsn, datetime]]:
    """(LSN, time) of every commit and abort pg_waldump prints for the given segments."""
    first, last = paths[0], paths[-1]
    done = subprocess.run(
        [str(bindir / "pg_waldump"), "-r", "Transaction", "-p", str(first.parent),
         first.name, last.name],
        capture_output=True, text=True, env={**os.environ, "TZ": "UTC"}, check=False,
    )  # fmt: skip
    found = []
    for line in done.stdout.splitlines():
        match = _DUMP_LINE.search(line)
        if match:
            moment = datetime.strptime(match[3], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
            found.append((Lsn.parse(match[1]), moment))
    return found


def mine(*paths: Path) -> list[tuple[Lsn, datetime]]:
    return [(r.lsn, r.time) for r in walrecords.xact_records(chunks(*paths))]


def segment_path(cluster: Any, lsn_text: str) -> Path:
    seg = WalSegment.from_lsn(1, Lsn.parse(lsn_text), SEGMENT)
    return Path(cluster.pgdata) / "pg_wal" / seg.name


def insert_lsn(cluster: Any) -> Lsn:
    return Lsn.parse(str(cluster.sql("SELECT pg_current_wal_insert_lsn()::text")[0][0]))


def test_every_commit_and_abort_matches_pg_waldump(pg_factory: Any, pg_bindir: Path) -> None:
    cluster = pg_factory(QUIET)
    start = str(cluster.sql("SELECT pg_current_wal_insert_lsn()::text")[0][0])
    cluster.sql("CREATE TABLE t (id int, note text)")
    cluster.sql("ALTER TABLE t ALTER note SET STORAGE plain")  # 3 kB records, not toasted
    # Big rows: records cross pages; full-page images: block headers with images.
    cluster.sql("INSERT INTO t SELECT g, repeat('x', 3000) FROM generate_series(1, 8000) g")
    with cluster.connect() as conn:
        for i in range(200):
            if i % 7 == 0:
                with conn.transaction(force_rollback=True), conn.cursor() as cur:
                    cur.execute("INSERT INTO t VALUES (%s, 'rolled back')", (i,))  # an abort
            else:
                conn.execute("UPDATE t SET note = %s WHERE id = %s", (f"n{i}", i + 1))
    end = str(cluster.sql("SELECT pg_current_wal_insert_lsn()::text")[0][0])
    paths = [segment_path(cluster, start)]
    while paths[-1] != segment_path(cluster, end):
        paths.append(paths[-1].with_name(WalSegment.parse(paths[-1].name).next().name))
    assert len(paths) >= 2
    for path in paths:
        expected = waldump(pg_bindir, path)
        assert mine(path) == expected, path.name
    together = waldump(pg_bindir, *paths)
    assert mine(*paths) == together
    assert len(together) > 150
    last = walrecords.last_xact(chunks(paths[-1]))
    assert last is not None and (last.lsn, last.time) == together[-1]


def test_a_commit_record_across_a_segment_boundary(pg_factory: Any, pg_bindir: Path) -> None:
    cluster = pg_factory(QUIET)
    cluster.sql("CREATE TABLE t (id int)")
    with cluster.connect() as conn:
        conn.autocommit = False
        # 3000 subtransactions with an xid each: a commit record of about 12 kB.
        conn.execute(
            "DO $$ BEGIN FOR i IN 1..3000 LOOP BEGIN INSERT INTO t VALUES (i); "
            "EXCEPTION WHEN others THEN NULL; END; END LOOP; END $$"
        )
        # Fill the segment up to about 4 kB before its end, then commit.
        while (room := SEGMENT - insert_lsn(cluster).value % SEGMENT) > 6000:
            size = min(room - 4200, 1 << 20)
            cluster.sql("SELECT pg_logical_emit_message(false, 'pad', repeat('x', %s))", (size,))
        boundary = insert_lsn(cluster).value // SEGMENT + 1
        conn.commit()
    cluster.sql("SELECT pg_switch_wal()")
    first = segment_path(cluster, str(Lsn((boundary - 1) * SEGMENT)))
    second = first.with_name(WalSegment.parse(first.name).next().name)
    head = second.read_bytes()[:24]
    assert int.from_bytes(head[2:4], "little") & walrecords.XLP_FIRST_IS_CONTRECORD
    both = waldump(pg_bindir, first, second)
    crossing = [(lsn, t) for lsn, t in both if lsn.value < boundary * SEGMENT]
    big = crossing[-1]  # the commit that starts in the first segment and ends in the next
    assert mine(first, second) == both
    assert big not in mine(first)  # incomplete without the next segment
    assert big not in mine(second)  # its tail is skipped, not read as records
    stopped = list(walrecords.xact_records(chunks(first, second), stop_lsn=Lsn(boundary * SEGMENT)))
    assert (stopped[-1].lsn, stopped[-1].time) == big


def test_a_segment_inside_one_long_transaction_has_no_commit(
    pg_factory: Any, pg_bindir: Path
) -> None:
    cluster = pg_factory(QUIET)
    cluster.sql("CREATE TABLE s (id int)")
    start = insert_lsn(cluster)
    cluster.sql("INSERT INTO s SELECT g FROM generate_series(1, 1200000) g")  # ~ 70 MB of WAL
    middle = segment_path(cluster, str(Lsn(start.value + 2 * SEGMENT)))
    assert waldump(pg_bindir, middle) == []
    assert walrecords.last_xact(chunks(middle)) is None


def test_the_zeroed_tail_of_the_current_segment_ends_the_records(pg_factory: Any) -> None:
    cluster = pg_factory(QUIET)
    cluster.sql("CREATE TABLE t (id int)")
    for i in range(5):
        cluster.sql("INSERT INTO t VALUES (%s)", (i,))
    (when,) = cluster.sql("SELECT pg_xact_commit_timestamp(xmin) FROM t WHERE id = 4")[0]
    path = segment_path(cluster, str(insert_lsn(cluster)))
    last = walrecords.last_xact(chunks(path, size=8192 * 3 + 5))  # odd chunks: pages reassembled
    assert last is not None and last.time == when
